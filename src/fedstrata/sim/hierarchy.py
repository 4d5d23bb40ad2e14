"""Three-tier hierarchical FedAvg in the simulator: clients -> edges -> regions -> center.

HierFAVG (Liu et al., "Client-Edge-Cloud Hierarchical Federated Learning", ICC 2020),
extended to three tiers: every edge averages its clients every edge round; every region
averages its edges' models every ``kappa_edge`` edge rounds; the center averages the
regions every ``kappa_region`` region rounds and applies the server optimizer. One
*global round* is one center aggregation (``kappa_edge * kappa_region`` edge rounds).
A flat topology (clients under the center) is the depth-one case: plain FedAvg.

Every tier runs the same :class:`~fedstrata.aggregation.WeightedMean`: clients
``accumulate`` into an edge's state; a node sends up its model change since the
parent's broadcast times its total weight (a partial :class:`MeanState`), which the
parent ``merge``\\ s, so metrics merge the same way. A node may re-compress its partial
for the hop up with a :class:`~fedstrata.compress.ChainCodec` with its own error
feedback (keyed by the node). Simulated time comes from the :mod:`network model
<fedstrata.sim.network>`: broadcast down the node's link (egress shared fairly),
clients' compute from their profiles, uploads into the node's ingress shared fairly.

An edge that fails in a global round loses its cluster for that round; from the next
round its clients are re-homed to the smallest live sibling edge, or to the region
(:func:`fedstrata.coordinator.planner.rehome`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedstrata.aggregation import MeanState, WeightedMean
from fedstrata.algorithms.server import ServerOptimizer
from fedstrata.compress import ChainCodec, CompressionSpec
from fedstrata.coordinator.cadence import evaluation_due
from fedstrata.coordinator.planner import rehome
from fedstrata.coordinator.summary import describe_losses
from fedstrata.coordinator.topology import Tier, Topology, TopologyNode
from fedstrata.core.context import RoundContext, derive_rng
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import HEADER_SIZE
from fedstrata.core.state import MemoryStateStore
from fedstrata.core.training import LocalData, Trainer
from fedstrata.core.update import validate_vector
from fedstrata.errors import ConfigError, FedstrataError
from fedstrata.monitoring import RoundMetrics, Sink
from fedstrata.pipeline.stage import Pipeline
from fedstrata.sim.engine import SimSettings, SimulationResult
from fedstrata.sim.executor import Executor
from fedstrata.sim.fedeval import FederatedEvaluator
from fedstrata.sim.network import NetworkModel, fair_share_finish
from fedstrata.sim.profiles import ProfileTable
from fedstrata.sim.tasks import ClientTask, TaskResult

__all__ = ["HierSettings", "HierarchicalSimulation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HierSettings:
    """Aggregation periods, partial re-compression and edge failures.

    Attributes:
        kappa_edge: edge rounds between region aggregations (kappa_1).
        kappa_region: region aggregations between center aggregations (kappa_2).
        partial_spec: codec for partial aggregates sent up from edges and regions
            (``None``: dense float32).
        edge_failure_rate: probability that an edge fails in a global round.
        failures: global round -> names of edges that fail in it.

    Raises:
        ConfigError: a kappa below 1 or a rate outside [0, 1).
    """

    kappa_edge: int = 1
    kappa_region: int = 1
    partial_spec: CompressionSpec | None = None
    edge_failure_rate: float = 0.0
    failures: Mapping[int, Collection[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("kappa_edge", "kappa_region"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"HierSettings.{name} must be an int >= 1, got {value!r}")
        if not 0 <= self.edge_failure_rate < 1:
            raise ConfigError(
                f"HierSettings.edge_failure_rate must be in [0, 1), got {self.edge_failure_rate}"
            )

    def repeats(self, tier: Tier) -> int:
        return {Tier.EDGE: self.kappa_edge, Tier.REGION: self.kappa_region}.get(tier, 1)


@dataclass
class _Tally:
    """Figures of the global round in flight."""

    ingress: dict[Tier, int] = field(default_factory=lambda: dict.fromkeys(Tier, 0))
    bytes_up: int = 0
    bytes_down: int = 0
    updates: int = 0
    lost: set[int] = field(default_factory=set)
    failed_clients: set[int] = field(default_factory=set)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (client, reason)
    edge_rounds: int = 0
    failed_edges: set[str] = field(default_factory=set)


@dataclass
class _Partial:
    state: MeanState
    end_s: float


@dataclass(eq=False)
class HierarchicalSimulation:
    """Runs HierFAVG over a :class:`Topology` on simulated time; see the module docstring."""

    settings: SimSettings
    hier: HierSettings
    topology: Topology
    network: NetworkModel
    trainer: Trainer
    executor: Executor
    client_sizes: np.ndarray
    test_data: LocalData | None
    profiles: ProfileTable
    server_optimizer: ServerOptimizer[Any]
    pipeline: Pipeline | None = None
    sinks: tuple[Sink, ...] = ()
    on_round: Callable[[RoundMetrics], None] | None = None
    fed_eval: FederatedEvaluator | None = None  # clients evaluate on their own data

    def __post_init__(self) -> None:
        self.aggregator = WeightedMean()
        self._size = self.trainer.spec.size
        self._dense_bytes = HEADER_SIZE + 4 * self._size
        names = sorted(n.name for n in self.topology.root.walk())
        self._node_ids = {name: i for i, name in enumerate(names)}
        self._codec: ChainCodec | None = None
        spec = self.hier.partial_spec
        if spec is not None:
            store = MemoryStateStore() if spec.error_feedback else None
            self._codec = ChainCodec(spec, self._size, store, state_key="partial_ef")
        self._now = 0.0

    def run(
        self, params: FloatVector, progress: SimulationResult | None = None
    ) -> SimulationResult:
        """Run ``settings.rounds`` global rounds from ``params``.

        ``progress``, when given, is filled in round by round and returned (see
        :meth:`fedstrata.sim.Simulation.run`).
        """
        start = time.perf_counter()
        result = SimulationResult(params=params) if progress is None else progress
        if self.fed_eval is not None:
            result.fed_evals = self.fed_eval.history
        opt_state = self.server_optimizer.init(params)
        for r in range(self.settings.rounds):
            params, opt_state, metrics = self.run_round(r, params, opt_state)
            result.rounds.append(metrics)
            result.params = params
        result.params, result.wall_s, result.sim_time_s = (
            params,
            time.perf_counter() - start,
            self._now,
        )
        return result

    def run_round(
        self, r: int, params: FloatVector, opt_state: object
    ) -> tuple[FloatVector, object, RoundMetrics]:
        """One global round: the center's iteration over the whole tree, then the step."""
        wall0, t0 = time.perf_counter(), self._now
        failed = self._failed_edges(r)
        tally = _Tally(failed_edges=failed)
        base = r * self.hier.kappa_edge * self.hier.kappa_region
        part = self._iteration(self.topology.root, params, t0, base, tally)
        if part.state.total_weight > 0:
            mean = self.aggregator.finalize(part.state)
            params, opt_state = self.server_optimizer.step(params, mean, opt_state)
        else:
            log.warning("global round %d: nothing reached the center; model unchanged", r)
        self._now = part.end_s
        metrics = self._metrics(r, params, part, tally, t0=t0, wall_s=time.perf_counter() - wall0)
        losses = describe_losses(tally.failures, (), tally.updates + len(tally.failures))
        if losses is not None:
            log.warning("global round %d: %s", r, losses)
        if failed:
            self.topology = rehome(self.topology, failed)
            log.warning("global round %d: edges %s failed; clients re-homed", r, sorted(failed))
        if self.fed_eval is not None:
            last = r == self.settings.rounds - 1
            self.fed_eval.maybe_run(self.executor, params, r, last=last, sinks=self.sinks)
        for sink in self.sinks:
            sink.emit(metrics)
        if self.on_round is not None:
            self.on_round(metrics)
        return params, opt_state, metrics

    def _failed_edges(self, r: int) -> set[str]:
        edges = sorted(n.name for n in self.topology.root.walk() if n.tier is Tier.EDGE)
        failed = set(self.hier.failures.get(r, ())) & set(edges)
        if self.hier.edge_failure_rate > 0:
            rng = derive_rng(self.settings.root_seed, r, -1, "edge-failure")
            draws = rng.random(len(edges))
            failed |= {
                e for e, u in zip(edges, draws, strict=True) if u < self.hier.edge_failure_rate
            }
        return failed

    # ---------------------------------------------------------------- one node

    def _cycle(
        self, node: TopologyNode, model: FloatVector, start_s: float, base: int, tally: _Tally
    ) -> _Partial:
        """``repeats`` iterations of ``node`` from ``model``; returns its partial upward."""
        reps, stride = self.hier.repeats(node.tier), self._stride(node)
        local, t, part = model, start_s, None
        for i in range(reps):
            part = self._iteration(node, local, t, base + i * stride, tally)
            t = part.end_s
            if reps > 1 and part.state.total_weight > 0:
                local = local + self.aggregator.finalize(part.state)
        assert part is not None
        if reps == 1 or part.state.total_weight <= 0:
            return part
        delta = (local - model).astype(np.float64) * part.state.total_weight
        state = MeanState(delta, part.state.total_weight, part.state.count, part.state.metrics)
        return _Partial(state, t)

    def _stride(self, node: TopologyNode) -> int:
        return 1 if node.tier is Tier.EDGE else self.hier.kappa_edge

    def _iteration(
        self, node: TopologyNode, model: FloatVector, start_s: float, sub: int, tally: _Tally
    ) -> _Partial:
        """Broadcast ``model`` to the children, let them work, gather their uploads."""
        link, failed = self.network.link(node.tier), tally.failed_edges
        kids = [c for c in node.children if c.name not in failed]
        for c in node.children:
            if c.name in failed:
                tally.failed_clients.update(c.all_clients())
        ids = np.asarray(node.clients, dtype=np.int64)
        caps_down = np.concatenate(
            [
                np.minimum(self.profiles.downlink_bps[ids], link.bandwidth_bps),
                np.full(len(kids), link.bandwidth_bps),
            ]
        )
        m = caps_down.size
        tally.bytes_down += m * self._dense_bytes
        lat = self._latencies(node, ids, kids)
        arrive = (
            start_s
            + lat
            + fair_share_finish(
                np.zeros(m), np.full(m, 8.0 * self._dense_bytes), caps_down, link.bandwidth_bps
            )
        )
        state = self.aggregator.init(self._size)
        ready, bits, keep = self._clients(
            node, model, arrive[: ids.size], sub=sub, state=state, tally=tally
        )
        for j, kid in enumerate(kids):
            p = self._cycle(kid, model, float(arrive[ids.size + j]), sub, tally)
            if p.state.total_weight <= 0:
                continue
            ready.append(p.end_s)
            bits.append(8.0 * self._send_up(state, p, kid, sub))
            keep.append(ids.size + j)
        if not keep:
            return _Partial(state, start_s)
        kept = np.asarray(keep, dtype=np.int64)
        caps_up = self._up_caps(ids, len(kids), link.bandwidth_bps)[kept]
        done = fair_share_finish(np.asarray(ready), np.asarray(bits), caps_up, link.bandwidth_bps)
        up_bytes = int(sum(bits) // 8)
        tally.ingress[node.tier] += up_bytes
        tally.bytes_up += up_bytes
        return _Partial(state, float((done + lat[kept]).max()))

    def _latencies(
        self, node: TopologyNode, ids: np.ndarray, kids: list[TopologyNode]
    ) -> np.ndarray:
        hosts = self.network.hosts
        senders = [int(i) for i in ids] + [hosts.get(k.name) for k in kids]
        return np.array([self.network.hop_latency_s(s, node.name, node.tier) for s in senders])

    def _up_caps(self, ids: np.ndarray, n_kids: int, bandwidth: float) -> np.ndarray:
        clients = np.minimum(self.profiles.uplink_bps[ids], bandwidth)
        return np.concatenate([clients, np.full(n_kids, bandwidth)])

    def _clients(
        self, node: TopologyNode, model: FloatVector, arrive: np.ndarray, *,
        sub: int, state: MeanState, tally: _Tally,
    ) -> tuple[list[float], list[float], list[int]]:  # fmt: skip
        """Train ``node``'s own clients; returns upload ready times, bits and positions."""
        ids = np.asarray(node.clients, dtype=np.int64)
        ready: list[float] = []
        bits: list[float] = []
        keep: list[int] = []
        if ids.size == 0:
            return ready, bits, keep
        plan = self.settings.plan
        tasks = [ClientTask(i, int(c), sub, plan) for i, c in enumerate(ids)]
        if node.tier is Tier.EDGE:
            tally.edge_rounds += 1
        for res in self.executor.run(model, tasks):
            nbytes = self._fold(state, res, tally)
            if nbytes is None:
                continue
            examples = plan.num_samples(int(self.client_sizes[res.client_id]))
            compute = (
                examples
                * self.trainer.flops_per_example
                / float(self.profiles.flops[res.client_id])
            )
            ready.append(float(arrive[res.index]) + compute)
            bits.append(8.0 * nbytes)
            keep.append(res.index)
        return ready, bits, keep

    def _fold(self, state: MeanState, res: TaskResult, tally: _Tally) -> int | None:
        """Accumulate one client's result; returns its upload bytes, or None if dropped."""
        cid = res.client_id
        weight = float(res.num_examples) if self.settings.weighting == "examples" else 1.0
        try:
            if res.error is not None:
                raise FedstrataError(res.error)
            if res.payload is not None:
                assert self.pipeline is not None
                self.aggregator.accumulate_payload(
                    state,
                    self.pipeline.codec,
                    res.payload,
                    weight,
                    client_id=cid,
                    metrics=res.metrics,
                )
                tally.updates += 1
                return res.payload.nbytes
            validate_vector(cid, res.vector, self.trainer.spec)
            assert res.vector is not None
            self.aggregator.accumulate(
                state, res.vector, weight, client_id=cid, metrics=res.metrics
            )
        except FedstrataError as exc:
            log.info("round step %d: client %d dropped: %s", res.index, cid, exc)
            tally.failed_clients.add(cid)
            tally.failures.append((cid, str(exc)))
            return None
        tally.updates += 1
        return self._dense_bytes

    def _send_up(self, state: MeanState, part: _Partial, kid: TopologyNode, sub: int) -> int:
        """Merge ``kid``'s partial into ``state`` (re-compressed if configured); its bytes."""
        if self._codec is None:
            self.aggregator.merge(state, part.state)
            return self._dense_bytes
        w = part.state.total_weight
        delta = (part.state.weighted_sum / w).astype(np.float32)
        ctx = RoundContext(sub, self.settings.root_seed).for_client(self._node_ids[kid.name])
        payload = self._codec.encode(delta, ctx)
        self.aggregator.accumulate_payload(state, self._codec, payload, w, client_id=-1)
        state.count += part.state.count - 1
        state.metrics.merge(part.state.metrics)
        return payload.nbytes

    def _metrics(
        self,
        r: int,
        params: FloatVector,
        part: _Partial,
        tally: _Tally,
        *,
        t0: float,
        wall_s: float,
    ) -> RoundMetrics:
        acc = loss = None
        last = r == self.settings.rounds - 1
        if self.test_data is not None and evaluation_due(r, self.settings.eval_every, last=last):
            ev = self.trainer.evaluate(params, self.test_data)
            acc, loss = ev.accuracy, ev.loss
        selected = sum(1 for _ in self.topology.root.all_clients())
        failed = len(tally.failed_clients)
        train_loss = self.aggregator.finalize_metrics(part.state).get("train_loss")
        return RoundMetrics(
            round_idx=r, accuracy=acc, loss=loss, train_loss=train_loss,
            clients_selected=selected, clients_completed=selected - failed,
            clients_failed=failed, clients_late=0,
            bytes_up=tally.bytes_up, bytes_down=tally.bytes_down,
            sim_round_s=part.end_s - t0, sim_time_s=part.end_s, wall_round_s=wall_s,
            compute_s=0.0, downlink_s=0.0, uplink_s=0.0,
            extras={
                "center_ingress_bytes": float(tally.ingress[Tier.CENTER]),
                "region_ingress_bytes": float(tally.ingress[Tier.REGION]),
                "edge_ingress_bytes": float(tally.ingress[Tier.EDGE]),
                "edge_rounds": float(tally.edge_rounds),
                "client_updates": float(tally.updates),
            },
        )  # fmt: skip
