"""One global round over the aggregation tree on simulated time (the walk and its clock).

:class:`TreeWalk` visits the tree from the center: a node broadcasts its model to its
own selected clients and to the children that have selected clients below them
(egress shared fairly on the node's link; the center's broadcast at the start of the
global round costs what the run's :class:`~fedstrata.sim.hooks.Broadcaster` says,
e.g. compressed deltas), the clients train (compute time from their profiles), the
children run their own periods recursively, and every upload shares the node's
ingress fairly (:func:`~fedstrata.core.timing.fair_share_finish`). A client update
that reaches its node after the round deadline is late (the coordinator's rule,
:meth:`~fedstrata.coordinator.RoundCoordinator.is_late`) and not folded; the node
then waits until the deadline before it sends up. Usable updates and children's
partials go through the node's :class:`~fedstrata.sim.tree_node.TierAggregation`.

Each node's result carries the (downlink, compute, uplink) seconds of its critical
path (the upload that reached it last), summed over a node's repeated periods, so the
center's legs add up to the round's duration unless a node waited for a deadline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal

import numpy as np

from fedstrata.coordinator.machine import RoundCoordinator
from fedstrata.coordinator.periods import NodePeriod, Periods
from fedstrata.coordinator.round_logic import client_weight, dense_bytes
from fedstrata.coordinator.system_tally import SystemTally
from fedstrata.coordinator.topology import Tier, TopologyNode
from fedstrata.core.params import FloatVector
from fedstrata.core.timing import fair_share_finish
from fedstrata.core.training import LocalPlan, Trainer
from fedstrata.errors import FedstrataError
from fedstrata.sim.executor import Executor
from fedstrata.sim.hooks import Broadcaster, ClientReport
from fedstrata.sim.intake import client_legs, dropped_out, result_problem, upload_bytes
from fedstrata.sim.network import NetworkModel
from fedstrata.sim.profiles import ProfileTable
from fedstrata.sim.tasks import ClientTask, TaskResult
from fedstrata.sim.tree_node import Hop, TierAggregation
from fedstrata.sim.tree_system import NodeIngress, account_transfers

__all__ = ["NodeResult", "TreeTally", "TreeWalk"]

Legs = tuple[float, float, float]
Status = Literal["accepted", "late", "failed"]
_RANK: dict[Status, int] = {"accepted": 0, "late": 1, "failed": 2}
_NO_LEGS: Legs = (0.0, 0.0, 0.0)


@dataclass
class TreeTally:
    """The global round in flight: who was selected, what happened, what it cost."""

    start_s: float
    cohort: frozenset[int]
    plans: Mapping[int, LocalPlan]
    failed_edges: set[str] = field(default_factory=set)
    ingress: dict[Tier, int] = field(default_factory=lambda: dict.fromkeys(Tier, 0))
    bytes_up: int = 0
    bytes_down: int = 0
    client_bytes_up: int = 0
    client_bytes_down: int = 0
    client_downloads: int = 0
    uploads: int = 0
    updates: int = 0
    edge_rounds: int = 0
    status: dict[int, tuple[Status, float]] = field(default_factory=dict)
    failures: list[tuple[int, str]] = field(default_factory=list)
    reports: list[ClientReport] = field(default_factory=list)
    folded_metrics: list[Mapping[str, float]] = field(default_factory=list)  # accepted
    # per client, what the aggregation protocol charges on top (secure aggregation's
    # key agreement): seconds on its compute leg, bytes on its uplink and downlink
    charge_s: Mapping[int, float] = field(default_factory=dict)
    charge_up: Mapping[int, int] = field(default_factory=dict)
    charge_down: Mapping[int, int] = field(default_factory=dict)
    system: SystemTally | None = None  # devices and links (the twelve metrics)
    nodes: dict[str, NodeIngress] = field(default_factory=dict)  # ingress per node

    def mark(self, cid: int, status: Status, arrival_s: float, reason: str = "") -> None:
        """Record a client's fate in one period; the worst fate and last arrival stay."""
        old, old_arrival = self.status.get(cid, ("accepted", arrival_s))
        if status == "failed" and (cid not in self.status or old != "failed"):
            self.failures.append((cid, reason))  # the first failure's reason is reported
        worst = status if _RANK[status] >= _RANK[old] else old
        self.status[cid] = (worst, max(arrival_s, old_arrival))


@dataclass
class NodeResult:
    """A node's aggregate state after its period(s), when it is ready, its critical legs."""

    state: object
    end_s: float
    legs: Legs = _NO_LEGS


@dataclass(frozen=True, eq=False)
class _Upload:
    position: int  # among the node's receivers: its clients first, then its children
    ready_s: float
    nbytes: int
    result: TaskResult | None = None  # a client's update …
    legs: Legs = _NO_LEGS  # … its (downlink, compute) so far; or a child's critical legs
    hop: Hop | None = None  # … or a child's partial
    status: Status | None = None  # a client's update folded on arrival (no deadline)
    reason: str = ""


@dataclass(eq=False)
class TreeWalk:
    """Runs one global round over the tree; see the module docstring."""

    network: NetworkModel
    trainer: Trainer
    executor: Executor
    profiles: ProfileTable
    client_sizes: np.ndarray
    coordinator: RoundCoordinator
    broadcast: Broadcaster
    inner: TierAggregation  # edges and regions
    center: TierAggregation
    node_ids: Mapping[str, int]
    periods: Periods
    weighting: Literal["examples", "uniform"] = "examples"
    root_seed: int = 0
    dropout_rate: float = 0.0  # devices.dropout_rate: drops after receiving the model

    def __post_init__(self) -> None:
        self._size = self.trainer.spec.size

    def cycle(
        self, node: TopologyNode, model: FloatVector, start_s: float, base: int,
        tally: TreeTally, *, fresh: bool,
    ) -> NodeResult:  # fmt: skip
        """``node``'s periods from ``model`` (``fresh``: the center's new model)."""
        agg = self.center if node.tier is Tier.CENTER else self.inner
        period = NodePeriod(model, self.periods.repeats(node.tier))
        t, legs = start_s, _NO_LEGS
        out = NodeResult(agg.init(self._size), start_s)
        for i, sub in enumerate(self.periods.rounds(node.tier, base)):
            out = self._iteration(node, period.local, t, sub, tally, fresh=fresh and i == 0)
            t, legs = out.end_s, _add(legs, out.legs)
            period.after(agg.weight(out.state), partial(agg.finalize, out.state))
        return NodeResult(period.finish(out.state, agg.weight(out.state), agg.partial), t, legs)

    def _iteration(
        self, node: TopologyNode, model: FloatVector, start_s: float, sub: int,
        tally: TreeTally, *, fresh: bool,
    ) -> NodeResult:  # fmt: skip
        """Broadcast ``model`` to the node's receivers, let them work, gather uploads."""
        agg = self.center if node.tier is Tier.CENTER else self.inner
        kids = self._live_children(node, tally)
        ids = np.asarray([c for c in node.clients if c in tally.cohort], dtype=np.int64)
        lat = self._latencies(node, ids, kids)
        arrive = start_s + lat + self._downlink(node, ids, kids, tally, fresh, lat=lat)
        state = agg.init(self._size)
        state, uploads = self._train(
            node, agg, state, model, arrive, start_s=start_s, sub=sub, tally=tally
        )
        for j, kid in enumerate(kids):
            p = self.cycle(kid, model, float(arrive[ids.size + j]), sub, tally, fresh=fresh)
            if self.inner.weight(p.state) <= 0:
                continue
            hop = agg.send(self.inner.partial(p.state), self.node_ids[kid.name], sub)
            legs = (p.legs[0] + float(arrive[ids.size + j]) - start_s, *p.legs[1:])
            uploads.append(_Upload(ids.size + j, p.end_s, hop.nbytes, legs=legs, hop=hop))
        if not uploads:
            return NodeResult(state, start_s + agg.close_s(state))
        done = self._upload_times(node, ids, len(kids), uploads, tally, lat=lat)
        out = self._gather(agg, state, uploads, done, start_s=start_s, tally=tally)
        return NodeResult(out.state, out.end_s + agg.close_s(out.state), out.legs)

    def _gather(
        self, agg: TierAggregation, state: object, uploads: list[_Upload], done: np.ndarray,
        *, start_s: float, tally: TreeTally,
    ) -> NodeResult:  # fmt: skip
        """Fold what arrived in time, in receiver order; the node's critical path."""
        end, legs, late = start_s, _NO_LEGS, False
        for u, arrival in zip(uploads, done.tolist(), strict=True):
            up_s = arrival - u.ready_s if u.hop is None else u.legs[2] + arrival - u.ready_s
            if u.hop is not None:
                state = agg.merge(state, u.hop)
            else:
                assert u.result is not None
                status, why = u.status, u.reason
                if status is None and self.coordinator.is_late(arrival):
                    status = "late"
                elif status is None:
                    state, status, why = self._fold(agg, state, u.result)
                self._settle(
                    u.result,
                    status,
                    why,
                    (u.legs[0], u.legs[1], up_s),
                    arrival=arrival,
                    tally=tally,
                )
                if status != "accepted":
                    late = late or status == "late"
                    continue
            if arrival > end:
                end, legs = arrival, (u.legs[0], u.legs[1], up_s)
        if late and self.coordinator.policy.deadline_s is not None:
            end = max(end, tally.start_s + self.coordinator.policy.deadline_s)
        return NodeResult(state, end, legs)

    def _fold(
        self, agg: TierAggregation, state: object, res: TaskResult
    ) -> tuple[object, Status, str]:
        """Fold one usable result; a malformed payload is dropped, the sum untouched."""
        try:
            state = agg.fold(state, res, client_weight(res.num_examples, self.weighting))
        except FedstrataError as exc:
            return state, "failed", str(exc)
        return state, "accepted", ""

    def _settle(
        self, res: TaskResult, status: Status, why: str, legs: Legs, *, arrival: float,
        tally: TreeTally,
    ) -> None:  # fmt: skip
        tally.mark(res.client_id, status, arrival, why)
        tally.updates += status == "accepted"
        if status == "accepted":
            tally.folded_metrics.append(res.metrics)
        down_s = arrival - legs[2] - legs[1] - tally.start_s
        self._report(res, (down_s, legs[1], legs[2]), arrival, status, tally)

    def _report(
        self, res: TaskResult, legs: Legs, arrival: float, status: Status, tally: TreeTally
    ) -> None:
        """What happened to a client in this period, for the scheduler's planner."""
        cid = res.client_id
        examples = tally.plans[cid].num_samples(int(self.client_sizes[cid]))
        loss = res.metrics.get("train_loss")
        tally.reports.append(ClientReport(cid, examples, *legs, arrival, status, loss))

    def _live_children(self, node: TopologyNode, tally: TreeTally) -> list[TopologyNode]:
        """Children that work this round: not failed, with selected clients below."""
        kids = []
        for c in node.children:
            selected = [i for i in c.all_clients() if i in tally.cohort]
            if c.name in tally.failed_edges:
                for i in selected:
                    tally.mark(i, "failed", tally.start_s, f"client {i}: edge {c.name} failed")
            elif selected:
                kids.append(c)
        return kids

    def _downlink(
        self, node: TopologyNode, ids: np.ndarray, kids: list[TopologyNode], tally: TreeTally,
        fresh: bool, *, lat: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """Seconds until each receiver holds the model (egress shared fairly), after
        the hop latencies ``lat``."""
        bw = self.network.link(node.tier).bandwidth_bps
        keys = [int(i) for i in ids] + [-1 - self.node_ids[k.name] for k in kids]
        dense = dense_bytes(self._size)
        nbytes = np.array(
            [self.broadcast.download_bytes(k) if fresh else dense for k in keys], dtype=np.float64
        )
        nbytes[: ids.size] += [tally.charge_down.get(int(i), 0) for i in ids]
        caps = np.concatenate(
            [np.minimum(self.profiles.downlink_bps[ids], bw), np.full(len(kids), bw)]
        )
        tally.bytes_down += int(nbytes.sum())
        tally.client_bytes_down += int(nbytes[: ids.size].sum())
        tally.client_downloads += ids.size
        fair = fair_share_finish(np.zeros(len(keys)), 8.0 * nbytes, caps, bw)
        if tally.system is not None:
            who = [*ids.tolist(), *[None] * len(kids)]
            account_transfers(tally.system, who, (nbytes, caps, lat, fair), up=False)
        return fair

    def _upload_times(
        self, node: TopologyNode, ids: np.ndarray, n_kids: int, uploads: list[_Upload],
        tally: TreeTally, *, lat: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """When each upload reaches ``node`` (ingress shared fairly, then the hop
        latency ``lat``); the transfers and the node's ingress are tallied."""
        bw = self.network.link(node.tier).bandwidth_bps
        caps = np.concatenate([np.minimum(self.profiles.uplink_bps[ids], bw), np.full(n_kids, bw)])
        pos = np.asarray([u.position for u in uploads], dtype=np.int64)
        bits = np.asarray([8.0 * u.nbytes for u in uploads])
        nbytes = sum(u.nbytes for u in uploads)
        tally.ingress[node.tier] += nbytes
        tally.bytes_up += nbytes
        ready = np.asarray([u.ready_s for u in uploads])
        finish = fair_share_finish(ready, bits, caps[pos], bw)
        done: np.ndarray = finish + lat[pos]
        into = tally.nodes.setdefault(node.name, NodeIngress(node.tier))
        into.nbytes += nbytes
        into.last_s = max(into.last_s, float(done.max()))
        if tally.system is not None:
            who = [u.result.client_id if u.result is not None else None for u in uploads]
            transfer = (bits / 8.0, caps[pos], lat[pos], finish - ready)
            account_transfers(tally.system, who, transfer, up=True)
        return done

    def _latencies(
        self, node: TopologyNode, ids: np.ndarray, kids: list[TopologyNode]
    ) -> np.ndarray:
        hosts = self.network.hosts
        senders = [int(i) for i in ids] + [hosts.get(k.name) for k in kids]
        return np.array(
            [self.network.hop_latency_s(s, node.name, node.tier) for s in senders],
            dtype=np.float64,
        ).reshape(-1)

    def _train(
        self, node: TopologyNode, agg: TierAggregation, state: object, model: FloatVector,
        arrive: np.ndarray, *, start_s: float, sub: int, tally: TreeTally,
    ) -> tuple[object, list[_Upload]]:  # fmt: skip
        """Train the node's selected clients (their ids lead ``arrive``).

        Without a deadline no update can be late, so usable results are folded as they
        stream in (memory O(model)); with one, each waits (copied) until its arrival
        time at the node is known.
        """
        ids = np.asarray([c for c in node.clients if c in tally.cohort], dtype=np.int64)
        if ids.size == 0:
            return state, []
        if node.tier is Tier.EDGE:
            tally.edge_rounds += 1
        tasks = [ClientTask(i, int(c), sub, tally.plans[int(c)]) for i, c in enumerate(ids)]
        wait = self.coordinator.policy.deadline_s is not None
        uploads = []
        for res in self.executor.run(model, tasks):
            got = float(arrive[res.index])
            problem = result_problem(res, self.trainer.spec) or dropped_out(
                self.dropout_rate, self.root_seed, sub, res.client_id
            )
            if problem is not None:
                self._settle(res, "failed", problem, _NO_LEGS, arrival=got, tally=tally)
                continue
            status: Status | None = None
            why = ""
            if wait:
                res = _kept(res)
            else:
                state, status, why = self._fold(agg, state, res)
            compute_s = self._compute_s(res.client_id, tally)
            legs = (got - start_s, compute_s, 0.0)
            nbytes = upload_bytes(res, self._size) + tally.charge_up.get(res.client_id, 0)
            tally.uploads += 1
            tally.client_bytes_up += nbytes
            uploads.append(
                _Upload(res.index, got + compute_s, nbytes, res, legs, status=status, reason=why)
            )
        return state, uploads

    def _compute_s(self, cid: int, tally: TreeTally) -> float:
        train_s = client_legs(
            self.profiles, self.client_sizes, self.trainer.flops_per_example,
            cid=cid, plan=tally.plans[cid], down_bytes=0, up_bytes=0,
        )[1]  # fmt: skip
        return train_s + tally.charge_s.get(cid, 0.0)


def _kept(res: TaskResult) -> TaskResult:
    """``res`` with its own copy of the vector (the executor reuses its buffers)."""
    if res.vector is None:
        return res
    return replace(res, vector=res.vector.copy())


def _add(a: Legs, b: Legs) -> Legs:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]
