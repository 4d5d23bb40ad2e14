"""Scheduling in deployment: the center sizes each client's work to the deadline.

The policies are the simulator's, written once in :mod:`fedstrata.scheduling`: the
planner (:class:`~fedstrata.scheduling.planner.WorkPlanner`: time predictor, deadline
allocation, feasibility, learning, registry write-back, Oort feedback) and the
coordinator's selector (:class:`~fedstrata.scheduling.scheduled_selector.ScheduledSelector`:
skip infeasible devices, over-select, hint Oort). This module only feeds them what a
deployment knows:

* **profiles**: a client agent reports its device (:class:`DeviceReport`: ``fedstrata
  device bench`` figures, measured at start-up by
  :func:`~fedstrata.runtime.sched_build.measured_report`, or given)
  and its local examples in its ``Hello``; the center writes it to the device registry
  (:class:`~fedstrata.scheduling.Registry`: SQLite by path, PostgreSQL by URL) and
  plans only clients it holds a profile of;
* **timings**: with each update the client reports its round's download and training
  seconds (:class:`RoundTimings`); the center times the upload itself. At the close,
  every cohort member becomes a :class:`~fedstrata.scheduling.planner.ClientReport`
  (accepted, late or failed) that the planner learns from and writes to the registry's
  ``round_history``.

Real devices stop by themselves, so the planner runs without the simulator's model of
devices stopping at the deadline (its ``DeadlineCut``). Under ``scheduling.stragglers:
partial`` (the default) each client is sent the steps it was allocated with
:class:`~fedstrata.runtime.sched_reports.PartialWork` terms
(:attr:`CenterScheduler.partial`), trains against the deadline, stops when its time is
up and reports the steps it completed (:mod:`fedstrata.runtime.settle`); the center
settles them with the simulator's rule (:meth:`CenterScheduler.settle`: weight factor
``done / assigned``, too little work dropped as a straggler). Under ``drop`` (FedAvg's
and FedScale's rule, the simulator's ``stop_at_deadline=False``) no terms go out: every
client runs its whole plan, the center closes the round at the deadline and a member
that has not arrived by then is late (its upload, when it comes, is refused as late).
Either way the round's ``ScheduleStats`` and ``round_history`` count partial and
dropped work as the simulator's do. No gRPC, no I/O besides the registry's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fedstrata.coordinator import RoundOutcome
from fedstrata.core.metrics import ScheduleStats
from fedstrata.core.training import LocalPlan
from fedstrata.errors import ConfigError, DataError, FedstrataError
from fedstrata.runtime.sched_reports import DeviceReport, PartialWork, RoundTimings
from fedstrata.scheduling import (
    DeviceProfiles,
    Registry,
    Selector,
    TimePredictor,
    replay_history,
)
from fedstrata.scheduling.planner import ClientReport, ScheduleSettings, WorkPlanner
from fedstrata.scheduling.predictor import PredictorState
from fedstrata.scheduling.scheduled_selector import ScheduledSelector

__all__ = [
    "CenterScheduler",
    "DeviceReport",
    "RoundTimings",
]

log = logging.getLogger(__name__)

I64 = NDArray[np.int64]
Status = Literal["accepted", "late", "failed"]


@dataclass
class _Arrival:
    timings: RoundTimings | None
    upload_s: float
    train_loss: float | None


class CenterScheduler:
    """The center's scheduling (see the module docstring); also the coordinator's
    selector.

    Args:
        settings: deadline and allocation knobs (``rounds.deadline_s``,
            ``scheduling.*``).
        inner: uniform or Oort selection.
        flops_per_example: of the trained model.
        down_bytes, up_bytes: bytes of a download and of an upload (the link model).
        registry: where profiles and history are written (None: nowhere).
        overselect: invite ``ceil(k * (1 + overselect))`` clients.
        skip_infeasible: never invite a device predicted to miss the deadline.
        precision: the clients' training precision (their speed factor).
        weighted: partial work counts with ``done / assigned`` (False under
            differential privacy, as in the simulator).
    """

    def __init__(
        self,
        settings: ScheduleSettings,
        inner: Selector,
        *,
        flops_per_example: float,
        down_bytes: int,
        up_bytes: int,
        registry: Registry | None = None,
        overselect: float = 0.0,
        skip_infeasible: bool = True,
        precision: str = "fp32",
        weighted: bool = True,
    ) -> None:
        if not flops_per_example > 0:
            raise ConfigError(f"flops_per_example must be > 0, got {flops_per_example}")
        self.settings, self.inner, self.registry = settings, inner, registry
        self.flops_per_example, self.precision = flops_per_example, precision
        self._bytes = (down_bytes, up_bytes)
        self._overselect, self._skip = overselect, skip_infeasible
        self._reports: dict[int, DeviceReport] = {}
        self._planner: WorkPlanner | None = None
        self._predictor: TimePredictor | None = None
        self._plans: dict[int, LocalPlan] = {}
        self._arrivals: dict[int, _Arrival] = {}
        self._start_s, self._round = 0.0, -1
        self._dropped: set[int] = set()  # settled as stragglers this round
        self.stats: list[ScheduleStats] = []
        self.partial: PartialWork | None = None
        if settings.deadline_s is not None and settings.stop_at_deadline:
            self.partial = PartialWork(settings.min_fraction, weighted)

    # ---- profiles ------------------------------------------------------------------

    def join(self, client_id: int, report: DeviceReport | None) -> None:
        """A client connected with its device ``report`` (None: it sent none, so it is
        not planned). Written to the registry.

        Raises:
            RegistryError: the registry write failed.
        """
        if report is None:
            log.warning("client %d sent no device profile; it is not scheduled", client_id)
            return
        if self._reports.get(client_id) != report:
            self._reports[client_id] = report
            self._planner = None  # rebuilt with this profile at the next round
            if self.registry is not None:
                self.registry.upsert_devices(report.profiles(client_id))
        log.info("client %d: %.3g GFLOP/s, %d examples", client_id, report.cpu_score,
                 report.local_examples)  # fmt: skip

    def planner(self) -> WorkPlanner:
        """The planner over every client that reported a profile (rebuilt when one
        joins; what the predictor learnt is kept).

        Raises:
            DataError: no client reported a profile yet.
        """
        if self._planner is None:
            self._planner = self._build()
        return self._planner

    def _build(self) -> WorkPlanner:
        if not self._reports:
            raise DataError("scheduling: no client has reported its device profile")
        ids = np.array(sorted(self._reports), dtype=np.int64)
        rows = [self._reports[int(i)].profiles(int(i)) for i in ids]
        profiles = DeviceProfiles(
            ids, *(np.concatenate([getattr(r, c) for r in rows]) for c in _COLUMNS)
        )
        predictor = TimePredictor.from_profiles(
            profiles, self.flops_per_example, precision=self.precision
        )
        if self._predictor is not None:
            predictor.load_state(_carry(self._predictor.state, predictor.state))
        elif self.registry is not None:
            replay_history(predictor, self.registry.history(device_ids=ids))
        self._predictor = predictor
        sizes = np.zeros(int(ids.max()) + 1, dtype=np.int64)
        for cid, report in self._reports.items():
            sizes[cid] = report.local_examples
        down, up = self._bytes
        return WorkPlanner(
            self.settings, predictor, profiles, sizes,
            flops_per_example=self.flops_per_example, down_bytes=down, up_bytes=up,
            registry=self.registry, selector=self.inner,
        )  # fmt: skip

    # ---- a round -------------------------------------------------------------------

    def admit(self, round_idx: int, available: I64, now_s: float) -> I64:
        """Who may be drawn: the available clients with a profile, less those the
        planner leaves out (``scheduling.skip_infeasible``)."""
        self._start_s, self._plans, self._arrivals, self._dropped = now_s, {}, {}, set()
        self._round = round_idx
        ids = np.array([c for c in available.tolist() if c in self._reports], dtype=np.int64)
        if ids.size < available.size:
            log.info("round %d: %d clients without a profile are not drawn", round_idx,
                     available.size - ids.size)  # fmt: skip
        if ids.size == 0:
            return ids
        return self.planner().admit(round_idx, ids)

    def select(self, round_idx: int, available: I64, k: int, rng: np.random.Generator) -> I64:
        """The coordinator's selector: the simulator's scheduled selection."""
        if available.size == 0:
            return available
        chooser = ScheduledSelector(
            self.inner, self.planner(), self.settings.batch_size,
            overselect_rate=self._overselect, skip_infeasible=self._skip,
        )  # fmt: skip
        return chooser.select(round_idx, available, k, rng)

    def plans(self, round_idx: int, cohort: Sequence[int], default: LocalPlan) -> list[LocalPlan]:
        """Each cohort member's plan, its work sized to the deadline."""
        if not cohort:
            return []
        ids = np.asarray(cohort, dtype=np.int64)
        out = list(self.planner().plans(round_idx, ids, default))
        self._plans = {int(c): p for c, p in zip(ids, out, strict=True)}
        for c, p in self._plans.items():
            log.info("round %d: client %d runs %s steps", round_idx, c, p.steps)
        return out

    def settle(self, client_id: int, timings: RoundTimings | None) -> tuple[float, str | None]:
        """Settle the partial work a cohort member reports (its ``timings.steps``):
        ``(weight factor, None)``, or ``(0, why)`` for a straggler to refuse (too little
        work: :meth:`WorkPlanner.settle`). Work not reported as partial counts as full.
        """
        terms, planner = self.partial, self._planner
        plan = self._plans.get(client_id)
        steps = None if timings is None else timings.steps
        if terms is None or planner is None or plan is None or steps is None:
            return 1.0, None
        try:
            factor, dropped = planner.settle(client_id, steps)
        except DataError as exc:
            return 0.0, f"partial work not settled: {exc}"
        if dropped:
            self._dropped.add(client_id)
            return 0.0, (
                f"straggler: {steps} of {plan.steps} steps done, below "
                f"scheduling.min_fraction={terms.min_fraction}"
            )
        if steps < (plan.steps or 0):
            log.info("client %d: partial work, %d of %s steps", client_id, steps, plan.steps)
        return (factor if terms.weighted else 1.0), None

    def arrived(
        self,
        client_id: int,
        timings: RoundTimings | None,
        upload_s: float,
        metrics: Mapping[str, float],
        round_idx: int | None = None,
    ) -> None:
        """A cohort member's upload of ``round_idx`` (None: the round in flight)
        completed (accepted or not) after ``upload_s``. An upload of an earlier round (a
        straggler's, refused as late) is not this round's arrival and is ignored."""
        if round_idx is not None and round_idx != self._round:
            log.info("client %d: late upload of round %d ignored by the scheduler",
                     client_id, round_idx)  # fmt: skip
            return
        loss = metrics.get("train_loss")
        self._arrivals[client_id] = _Arrival(timings, upload_s, loss)

    def observe(self, round_idx: int, outcome: RoundOutcome, now_s: float) -> ScheduleStats | None:
        """Learn from the closed round; its ``ScheduleStats`` (None: nothing planned).

        A failure here (the registry unreachable) is logged and the run goes on.
        """
        if not self._plans or self._planner is None:
            return None
        round_s = now_s - self._start_s
        reports = [self._report(c, outcome, round_s) for c in self._plans]
        try:
            stats = self._planner.observe(round_idx, reports, round_s)
        except FedstrataError as exc:
            log.warning("round %d: scheduler could not learn from the round: %s", round_idx, exc)
            return None
        if stats is not None:
            self.stats.append(stats)
        return stats

    def _report(self, cid: int, outcome: RoundOutcome, round_s: float) -> ClientReport:
        status: Status = "failed"
        if cid in outcome.accepted:
            status = "accepted"
        elif cid in outcome.late or cid in self._dropped:  # a straggler, as simulated
            status = "late"
        got = self._arrivals.get(cid)
        t = None if got is None else got.timings
        if got is None or t is None:
            if status == "late":  # a straggler that sent nothing by the close (dropped):
                # busy for the whole round at least (Oort's duration: a lower bound)
                return ClientReport(cid, 0, 0.0, round_s, 0.0, round_s, "late")
            return ClientReport(cid, 0, 0.0, 0.0, 0.0, 0.0, "failed")
        arrival = t.download_s + t.compute_s + got.upload_s
        return ClientReport(
            cid, t.examples, t.download_s, t.compute_s, got.upload_s, arrival, status,
            got.train_loss,
        )  # fmt: skip


_COLUMNS = (
    "cpu_score", "memory_gb", "network_latency_ms", "uplink_mbps", "downlink_mbps",
    "availability", "bf16_speedup", "fp16_speedup",
)  # fmt: skip


def _carry(old: PredictorState, new: PredictorState) -> PredictorState:
    """``new`` with what ``old`` learnt about the devices both know."""
    ewma, count = new.ewma_s.copy(), new.count.copy()
    common, i_old, i_new = np.intersect1d(old.device_id, new.device_id, return_indices=True)
    ewma[i_new], count[i_new] = old.ewma_s[i_old], old.count[i_old]
    del common
    return PredictorState(
        new.device_id, new.prior_s, ewma, count, old.ape_sum, old.ape_count, old.last_mape
    )
