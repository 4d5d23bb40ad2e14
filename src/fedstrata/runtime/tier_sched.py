"""Scheduling through an explicit tree's edges, as the hierarchical simulator schedules.

The simulator's tree (:mod:`fedstrata.sim.hierarchy`) decides once per global round,
at the center, over every client of the tree: the planner's ``admit``, the
coordinator's draw through the scheduled selector (Oort, skipping devices predicted to
miss the deadline, over-selection:
:class:`~fedstrata.scheduling.scheduled_selector.ScheduledSelector`), then each
member's work sized to the global deadline
(:class:`~fedstrata.scheduling.planner.WorkPlanner`); every edge round of that global
round runs those plans, and the planner learns from each member's last period. The
runtime makes the same decisions with the same code, where the knowledge is:

* **profiles** reach the edge a client connects to; the edge forwards them to the
  center in its ``Hello`` (``TierProfile``), and the center's
  :class:`~fedstrata.runtime.scheduling.CenterScheduler` over the whole tree writes
  them to the registry (``scheduling.registry_url``) as for clients connected to it;
* **the decision** is the center's :class:`TreeScheduler`: the cohort over the whole
  tree and each member's allocated steps, sent down in every edge's task
  (:class:`~fedstrata.runtime.tier_work.TierWork`); an edge trains its share
  (:func:`~fedstrata.coordinator.periods.edge_members` of that cohort, its re-homed
  clients included) with those plans in each of its ``kappa_edge`` edge rounds;
* **partial work** is settled at the edge with the shared rule
  (:func:`~fedstrata.scheduling.settle_reported`, :func:`~fedstrata.scheduling.settlement_weights`)
  by its :class:`EdgeFollower`, which also times the uploads;
* **regions** relay both ways (:class:`RegionRelay`): the decision down in each
  region round's tasks, their edges' profiles and reports up;
* **timings**: with its partial an edge reports what happened to each of its members
  in its last edge round (:class:`~fedstrata.runtime.tier_work.MemberReport`); the
  center settles their steps with the planner and lets it learn (predictor, Oort
  feedback, ``round_history`` written to the registry, ``RoundRecord.schedule``).
  Under two-tier secure aggregation the masked sum goes up through the protocol's
  steps, so the edge sends them first, in a partial header without data.

One difference from the simulator is the deadline the work is sized to: the simulator
plans within ``rounds.deadline_s`` less its modelled network's margin for the way down
to the edges (``api.hierarchy.tree_margin_s``); a deployment's network is real and its
clients measure their downloads, so the center plans within ``rounds.deadline_s``.
Where that margin moves an allocation, the decisions differ (docs/hierarchy.md).
No gRPC here; the registry is the only I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from fedstrata.config import FedConfig
from fedstrata.coordinator import RoundCoordinator, RoundOutcome
from fedstrata.core.metrics import ScheduleStats
from fedstrata.core.training import LocalPlan
from fedstrata.errors import ConfigError, DataError, FedstrataError, ProtocolError
from fedstrata.runtime.center import Center
from fedstrata.runtime.records import TaskSpec
from fedstrata.runtime.sched_build import center_scheduler
from fedstrata.runtime.sched_reports import DeviceReport, PartialWork, RoundTimings
from fedstrata.runtime.scheduling import CenterScheduler
from fedstrata.runtime.tier_periods import TreeSpec
from fedstrata.runtime.tier_work import MemberReport, Status, TierFollower, TierWork
from fedstrata.scheduling.allocation import settle_reported, settlement_weights
from fedstrata.scheduling.planner import ClientReport

__all__ = ["EdgeFollower", "RegionRelay", "TreeScheduler", "follow", "tree_scheduler"]

log = logging.getLogger(__name__)

I64 = NDArray[np.int64]


class TreeScheduler:
    """The center's scheduling over the whole tree (see the module docstring).

    Args:
        scheduler: the planner and selector over every client of the tree (built as
            the simulator's tree builds them: ``center_scheduler(..., tree=True)``).
        spec: the tree (its clients, the cohort policy).
    """

    def __init__(self, scheduler: CenterScheduler, spec: TreeSpec) -> None:
        self.scheduler, self.spec = scheduler, spec
        self.coordinator = RoundCoordinator(spec.policy, selector=scheduler)
        self._tree = frozenset(spec.topology.root.all_clients())
        self.work: TierWork | None = None
        self._reports: dict[int, MemberReport] = {}
        self._start_s, self._round = 0.0, -1
        self._pending: dict[int, DeviceReport] = {}  # profiles for the next decision
        self._known: dict[int, DeviceReport] = {}

    @property
    def partial(self) -> PartialWork | None:
        """The partial-work terms the edges' tasks carry (the center's scheduler's)."""
        return self.scheduler.partial

    def join(self, tier_id: int, profiles: Mapping[int, DeviceReport]) -> None:
        """An edge forwarded its clients' profiles (registering, or with a partial):
        they count from the next global round's decision (a planner rebuilt in the
        middle of a round would forget the round in flight)."""
        stray = sorted(set(profiles) - self._tree)
        if stray:
            log.warning("tier %d forwarded profiles of clients %s, not of the tree", tier_id,
                        stray)  # fmt: skip
        for cid in sorted(set(profiles) & self._tree):
            if self._known.get(cid) != profiles[cid]:
                self._pending[cid] = self._known[cid] = profiles[cid]

    def start(self, round_idx: int, now_s: float, default: LocalPlan) -> TierWork:
        """Global round ``round_idx``'s decision: the cohort over the tree, each
        member's plan sized to the deadline (a member's steps: 0 for ``default``)."""
        self._start_s, self._reports, self._round = now_s, {}, round_idx
        for cid in sorted(self._pending):
            self.scheduler.join(cid, self._pending[cid])
        self._pending = {}
        every = np.array(sorted(self._tree), dtype=np.int64)
        available = self.scheduler.admit(round_idx, every, now_s)
        cohort = self.coordinator.select(round_idx, available) if available.size else available
        members = [int(c) for c in cohort]
        self.work = TierWork.of(members, self.scheduler.plans(round_idx, members, default))
        log.info("global round %d: cohort %s over the tree", round_idx, members)
        return self.work

    def reported(self, round_idx: int, reports: Sequence[MemberReport]) -> None:
        """An edge's member reports, with its partial (of the round in flight only)."""
        if round_idx != self._round:
            if reports:
                log.warning("reports of round %d ignored in round %d", round_idx, self._round)
            return
        members = () if self.work is None else self.work.members
        for r in reports:
            if r.client_id in members:
                self._reports[r.client_id] = r

    def observe(self, round_idx: int, now_s: float) -> ScheduleStats | None:
        """Settle the members' reported steps and learn from the global round; its
        ``ScheduleStats`` (None: nothing planned, or the registry failed: logged)."""
        if self.work is None or not self.work.members:
            return None
        planner, round_s = self.scheduler.planner(), now_s - self._start_s
        reports = [self._client_report(cid, round_s) for cid in self.work.members]
        try:
            stats = planner.observe(round_idx, reports, round_s)
        except FedstrataError as exc:
            log.warning("round %d: scheduler could not learn from the round: %s", round_idx, exc)
            return None
        if stats is not None:
            self.scheduler.stats.append(stats)
        return stats

    def _client_report(self, cid: int, round_s: float) -> ClientReport:
        m = self._reports.get(cid)
        if m is None:  # its edge failed or did not report it
            return ClientReport(cid, 0, 0.0, 0.0, 0.0, 0.0, "failed")
        if self.scheduler.partial is not None and m.steps is not None:
            try:
                self.scheduler.planner().settle(cid, m.steps)
            except DataError as exc:
                log.warning("client %d: reported steps not settled: %s", cid, exc)
        if not m.timed and m.status == "late":  # a straggler that sent nothing: busy
            return ClientReport(cid, 0, 0.0, round_s, 0.0, round_s, "late")  # all round
        if not m.timed:
            return ClientReport(cid, 0, 0.0, 0.0, 0.0, 0.0, m.status)
        arrival = m.download_s + m.compute_s + m.upload_s
        return ClientReport(
            cid, m.examples, m.download_s, m.compute_s, m.upload_s, arrival, m.status,
            m.train_loss,
        )  # fmt: skip


class EdgeFollower:
    """An edge's scheduling under :class:`TreeScheduler`: it plans nothing itself.

    Its center (``Deployment.edge``) calls it where a center calls its
    :class:`~fedstrata.runtime.scheduling.CenterScheduler`: it keeps its clients'
    profiles (forwarded up at registration), gives each member the steps the center
    allocated (:meth:`assign`), settles partial work with the shared rule under the
    center's terms, and keeps each member's report of the last edge round for the
    partial (:meth:`take_reports`).
    """

    def __init__(self) -> None:
        self.partial: PartialWork | None = None  # the center's terms (assign)
        self.profiles: dict[int, DeviceReport] = {}
        self.work: TierWork | None = None
        self._assigned: dict[int, int | None] = {}
        self._arrivals: dict[int, tuple[RoundTimings | None, float, float | None]] = {}
        self._dropped: set[int] = set()
        self._reports: dict[int, MemberReport] = {}
        self._round = -1  # the edge round in flight

    def join(self, client_id: int, report: DeviceReport | None) -> None:
        if report is None:
            log.warning("client %d sent no device profile; it is not scheduled", client_id)
            return
        self.profiles[client_id] = report

    def assign(self, task: TaskSpec) -> tuple[int, ...]:
        """Take the center's decision for the global round from its ``task`` (its
        edge rounds all use it): the cohort, the steps and the partial-work terms.
        Returns the cohort, in the center's draw order.

        Raises:
            ProtocolError: the task carried none (the parent does not schedule the tree).
        """
        if task.work is None:
            raise ProtocolError("the parent's task carries no scheduled cohort (scheduling on?)")
        self.work, self.partial, self._reports = task.work, task.partial, {}
        return task.work.members

    def admit(self, round_idx: int, available: I64, now_s: float) -> I64:
        del now_s
        self._assigned, self._arrivals, self._dropped = {}, {}, set()
        self._round = round_idx
        return available

    def select(self, round_idx: int, available: I64, k: int, rng: np.random.Generator) -> I64:
        del round_idx, k, rng
        return available  # the center drew the cohort

    def plans(self, round_idx: int, cohort: Sequence[int], default: LocalPlan) -> list[LocalPlan]:
        if self.work is None:
            raise DataError(f"edge round {round_idx}: no scheduled cohort assigned")
        out = [self.work.plan(int(c), default) for c in cohort]
        self._assigned = {int(c): p.steps for c, p in zip(cohort, out, strict=True)}
        return out

    def settle(self, client_id: int, timings: RoundTimings | None) -> tuple[float, str | None]:
        """The simulator's settlement of the steps a member reports (CenterScheduler's)."""
        terms, assigned = self.partial, self._assigned.get(client_id)
        steps = None if timings is None else timings.steps
        if terms is None or assigned is None or steps is None:
            return 1.0, None
        a = np.array([assigned], dtype=np.int64)
        done, dropped = settle_reported(a, np.array([steps], dtype=np.int64), terms.min_fraction)
        if dropped[0]:
            self._dropped.add(client_id)
            return 0.0, (
                f"straggler: {steps} of {assigned} steps done, below "
                f"scheduling.min_fraction={terms.min_fraction}"
            )
        factor = float(settlement_weights(a, done, dropped)[0])
        return (factor if terms.weighted else 1.0), None

    def arrived(
        self, client_id: int, timings: RoundTimings | None, upload_s: float,
        metrics: Mapping[str, float], round_idx: int | None = None,
    ) -> None:  # fmt: skip
        """A member's upload of edge round ``round_idx`` (None: the one in flight); a
        late upload of an earlier edge round is not this one's arrival."""
        if round_idx is None or round_idx == self._round:
            self._arrivals[client_id] = (timings, upload_s, metrics.get("train_loss"))

    def observe(self, round_idx: int, outcome: RoundOutcome, now_s: float) -> None:
        """Keep each member's report of this edge round (the last one is sent up)."""
        del round_idx, now_s
        for cid in self._assigned:
            self._reports[cid] = self._report(cid, outcome)

    def take_reports(self) -> tuple[MemberReport, ...]:
        """The members' reports for the partial; cleared."""
        out = tuple(self._reports[c] for c in sorted(self._reports))
        self._reports = {}
        return out

    def _report(self, cid: int, outcome: RoundOutcome) -> MemberReport:
        status: Status = "failed"
        if cid in outcome.accepted:
            status = "accepted"
        elif cid in outcome.late or cid in self._dropped:
            status = "late"
        got = self._arrivals.get(cid)
        t = None if got is None else got[0]
        if got is None or t is None:
            return MemberReport(cid, status)
        return MemberReport(
            cid, status, t.examples, t.download_s, t.compute_s, got[1], got[2], t.steps, True
        )


class RegionRelay:
    """A region tier's part: it relays the center's decision down to its edges (in
    each region round's tasks) and its edges' profiles and member reports up (in its
    ``Hello`` and partial); it decides nothing. Both its center's
    :class:`~fedstrata.runtime.tier_work.TreeRole` and its tier's
    :class:`~fedstrata.runtime.tier_work.TierFollower`."""

    def __init__(self) -> None:
        self.profiles: dict[int, DeviceReport] = {}
        self.work: TierWork | None = None
        self._partial: PartialWork | None = None
        self._reports: dict[int, MemberReport] = {}
        self._round = -1  # the region round in flight

    @property
    def partial(self) -> PartialWork | None:
        return self._partial

    def assign(self, task: TaskSpec) -> tuple[int, ...]:
        """The parent's decision, relayed in each region round.

        Raises:
            ProtocolError: the task carried none.
        """
        if task.work is None:
            raise ProtocolError("the parent's task carries no scheduled cohort (scheduling on?)")
        self.work, self._partial, self._reports = task.work, task.partial, {}
        return task.work.members

    def join(self, tier_id: int, profiles: Mapping[int, DeviceReport]) -> None:
        del tier_id
        self.profiles.update(profiles)

    def start(self, round_idx: int, now_s: float, default: LocalPlan) -> TierWork:
        del now_s, default
        self._round = round_idx
        if self.work is None:
            raise DataError(f"region round {round_idx}: no scheduled cohort assigned")
        return self.work

    def reported(self, round_idx: int, reports: Sequence[MemberReport]) -> None:
        """An edge's reports; a later region round's replace an earlier one's."""
        if round_idx == self._round:
            self._reports.update((r.client_id, r) for r in reports)

    def observe(self, round_idx: int, now_s: float) -> None:
        del round_idx, now_s

    def take_reports(self) -> tuple[MemberReport, ...]:
        out = tuple(self._reports[c] for c in sorted(self._reports))
        self._reports = {}
        return out


def tree_scheduler(
    config: FedConfig, flops_per_example: float, size: int, num_clients: int
) -> TreeScheduler:
    """The center's :class:`TreeScheduler` of ``config``'s explicit tree.

    Raises:
        ConfigError: ``scheduling`` is off.
        RegistryError: the registry cannot be opened or migrated.
    """
    inner = center_scheduler(config, flops_per_example, size, num_clients, tree=True)
    if inner is None:
        raise ConfigError("tree_scheduler: scheduling is off")
    return TreeScheduler(inner, TreeSpec.of(config, num_clients))


def follow(center: Center, *, region: bool) -> TierFollower:
    """What the tier of ``center`` (``Deployment.edge``) forwards under a scheduled
    tree: an edge's :class:`EdgeFollower` (its center's scheduler); a region's
    :class:`RegionRelay`, made its center's tree role (its children are edge tiers,
    not devices: it plans nothing for them).

    Raises:
        ConfigError: an edge's center without an :class:`EdgeFollower`.
    """
    if region:
        relay = RegionRelay()
        center.scheduler, center.tree_sched = None, relay
        return relay
    if not isinstance(center.scheduler, EdgeFollower):
        raise ConfigError(
            "an explicit tree's edge under scheduling needs the center built by "
            f"Deployment.edge (its scheduler is {type(center.scheduler).__name__})"
        )
    return center.scheduler
