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

Each global round the :class:`~fedstrata.coordinator.RoundCoordinator` draws the cohort
from the available clients (``clients_per_round``, Poisson sampling under central DP,
the scheduler's over-selection); only selected clients train and nodes without
selected clients sit out. Client updates that reach their edge after the deadline are
late (:mod:`fedstrata.sim.tree_round`). The coordinator closes the round with its
outcome (``min_clients``); the center's aggregate then goes through the round hooks
(central DP noise) and the pipeline's server halves, as in the flat simulator
(:func:`fedstrata.coordinator.round_logic.server_step`), and the center broadcasts the
new model through the run's :class:`~fedstrata.sim.hooks.Broadcaster` (dense or
compressed deltas).

An edge that fails in a global round loses its cluster for that round; from the next
round its clients are re-homed to the smallest live sibling edge, or to the region
(:func:`fedstrata.coordinator.planner.rehome`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from fedstrata.aggregation import WeightedMean
from fedstrata.aggregation.protocol import Aggregator
from fedstrata.algorithms.server import ServerOptimizer
from fedstrata.compress import ChainCodec, CompressionSpec
from fedstrata.coordinator import (
    ClientFailed,
    CloseRound,
    DeadlinePassed,
    RoundCoordinator,
    RoundOutcome,
    RoundPolicy,
    SendModel,
    StartRound,
    UpdateArrived,
)
from fedstrata.coordinator.cadence import evaluate_round
from fedstrata.coordinator.hooks import RoundHook
from fedstrata.coordinator.periods import Periods, node_ids
from fedstrata.coordinator.planner import rehome
from fedstrata.coordinator.round_logic import server_step, start_hooks
from fedstrata.coordinator.round_metrics import (
    ClientCounts,
    RoundFigures,
    codec_stats,
    emit_round,
    round_metrics,
)
from fedstrata.coordinator.topology import Tier, Topology
from fedstrata.core.context import derive_rng
from fedstrata.core.metrics import TierStats, precision_stats
from fedstrata.core.params import FloatVector
from fedstrata.core.state import MemoryStateStore
from fedstrata.core.statepart import StatePart
from fedstrata.core.training import LocalData, LocalPlan, Trainer
from fedstrata.errors import ConfigError
from fedstrata.monitoring import RoundMetrics, Sink
from fedstrata.pipeline.stage import Pipeline
from fedstrata.sim import checkpointing as ckpt
from fedstrata.sim.engine import SimSettings, SimulationResult
from fedstrata.sim.executor import Executor
from fedstrata.sim.fedeval import FederatedEvaluator
from fedstrata.sim.hooks import Broadcaster, ClientPlanner, DenseBroadcast
from fedstrata.sim.intake import finish_round, system_tally
from fedstrata.sim.network import NetworkModel
from fedstrata.sim.profiles import ProfileTable
from fedstrata.sim.tree_node import MeanTier, RobustCenter, TierAggregation
from fedstrata.sim.tree_round import NodeResult, TreeTally, TreeWalk
from fedstrata.sim.tree_secagg import SecureRound, SecureTier, secure_round
from fedstrata.sim.tree_system import tree_detail

if TYPE_CHECKING:
    from fedstrata.secagg.tree import TreeSecAgg

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
        return self.periods.repeats(tier)

    @property
    def periods(self) -> Periods:
        """The tiers' periods (:mod:`fedstrata.coordinator.periods`)."""
        return Periods(self.kappa_edge, self.kappa_region)


@dataclass(eq=False)
class HierarchicalSimulation:
    """Runs HierFAVG over a :class:`Topology` on simulated time; see the module docstring.

    ``aggregator`` folds client updates at every node (the weighted mean, or the
    scheduler's settlement-weighted mean); ``center_aggregator``, when set, is a robust
    aggregator (or your own) run at the center over its children's partial means.
    """

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
    coordinator: RoundCoordinator | None = None  # default: every client, no deadline
    aggregator: Aggregator[Any] = field(default_factory=WeightedMean)
    center_aggregator: Aggregator[Any] | None = None
    broadcast: Broadcaster | None = None  # default: the dense model
    hooks: tuple[RoundHook, ...] = ()
    planner: ClientPlanner | None = None  # default: every client runs settings.plan
    secure: TreeSecAgg | None = None  # secure aggregation at every tier (two-tier masks)
    on_state: ckpt.StateCallback | None = None  # told the engine's state after each round

    def __post_init__(self) -> None:
        size = self.trainer.spec.size
        self._node_ids = node_ids(self.topology)
        self._codec: ChainCodec | None = None
        spec = self.hier.partial_spec
        if spec is not None:
            store = MemoryStateStore() if spec.error_feedback else None
            self._codec = ChainCodec(spec, size, store, state_key="partial_ef")
        self._coordinator = self.coordinator or RoundCoordinator(
            RoundPolicy(root_seed=self.settings.root_seed)
        )
        self._bc = self.broadcast or DenseBroadcast(size)
        self._plain = MeanTier(
            self.aggregator, self.pipeline, self._codec, self.settings.root_seed
        )
        self._inner: TierAggregation = self._plain
        self._center: TierAggregation = self._plain
        if self.center_aggregator is not None:
            self._center = RobustCenter(self.center_aggregator, self._plain)
        self._secure: SecureRound | None = None
        if self.secure is not None:
            self._check_secure()
            self._secure = secure_round(
                self.secure, self.pipeline, self._node_ids, self.aggregator
            )
            self._inner = SecureTier(self._secure)
            self._center = SecureTier(self._secure, at_center=True)
        self._now = 0.0

    def _check_secure(self) -> None:
        """Secure aggregation runs one secure sum per global round over client updates.

        Raises:
            ConfigError: aggregation periods, partial re-compression or a robust center.
        """
        h = self.hier
        clash = {
            "kappa_edge * kappa_region > 1": h.kappa_edge * h.kappa_region > 1,
            "a partial codec": h.partial_spec is not None,
            "a robust center aggregator": self.center_aggregator is not None,
        }
        bad = [name for name, on in clash.items() if on]
        if bad:
            raise ConfigError(f"tree secure aggregation does not combine with {', '.join(bad)}")

    def run(
        self,
        params: FloatVector,
        progress: SimulationResult | None = None,
        resume: Mapping[str, StatePart] | None = None,
    ) -> SimulationResult:
        """Run ``settings.rounds`` global rounds from ``params``.

        ``progress``, when given, is filled in round by round and returned (see
        :meth:`fedstrata.sim.Simulation.run`). A round hook may stop the run (the
        privacy budget is spent): ``stopped_reason`` says why. ``resume``: a
        checkpoint's parts; the run continues after the rounds they hold (the tree
        as it was then, failed edges' clients re-homed).

        Raises:
            CheckpointCorrupt: ``resume`` does not fit this simulation.
            CheckpointError: ``on_state`` is set and a component cannot be checkpointed.
        """
        start = time.perf_counter()
        result = SimulationResult(params=params) if progress is None else progress
        if self.fed_eval is not None:
            result.fed_evals = self.fed_eval.history
        opt_state, first = self.server_optimizer.init(params), 0
        if resume is not None:
            at = self._restore(resume)
            first, params, opt_state = at.rounds_done, at.params, at.opt_state
            self._now = at.clock_s
            result.params = params
        for r in range(first, self.settings.rounds):
            stop = start_hooks(self.hooks, r)
            if stop is not None:
                log.warning("stopping before global round %d: %s", r, stop)
                result.stopped_reason = stop
                break
            params, opt_state, metrics = self.run_round(r, params, opt_state)
            result.rounds.append(metrics)
            result.params = params
            if self.on_state is not None:
                self.on_state(r + 1, self._state_parts(r + 1, params, opt_state))
        result.params, result.wall_s, result.sim_time_s = (
            params,
            time.perf_counter() - start,
            self._now,
        )
        return result

    def _components(self) -> ckpt.Components:
        return ckpt.Components(
            "tree", self._coordinator, self.hooks, self._bc, self.planner, self.server_optimizer
        )

    def _state_parts(self, done: int, params: FloatVector, opt_state: object) -> ckpt.EngineParts:
        """The engine's parts, the tree (edges may have failed) and partial residuals."""
        parts = ckpt.engine_parts(self._components(), done, self._now, params, opt_state)
        store = None if self._codec is None else self._codec.state_store
        return {**parts, **ckpt.tree_parts(self.topology, store)}

    def _restore(self, parts: Mapping[str, StatePart]) -> ckpt.Resumed:
        at = ckpt.restore_engine(self._components(), parts, self.trainer.spec.size)
        store = None if self._codec is None else self._codec.state_store
        self.topology = ckpt.restore_tree(parts, store)
        return at

    def run_round(
        self, r: int, params: FloatVector, opt_state: object
    ) -> tuple[FloatVector, object, RoundMetrics]:
        """One global round: cohort, the center's iteration over the tree, then the step."""
        wall0, t0 = time.perf_counter(), self._now
        failed = self._failed_edges(r)
        send = self._start(r, t0)
        plans: Sequence[LocalPlan] = [self.settings.plan] * send.client_ids.size
        if self.planner is not None:
            plans = self.planner.plans(r, send.client_ids, self.settings.plan)
        cohort = [int(c) for c in send.client_ids]
        tally = self._tally(r, t0, cohort, plans, failed)
        tally.system = system_tally(self.profiles, t0, cohort, self.trainer.spec.size)
        base = self.hier.periods.base(r)
        model = self._bc.model_for_clients(params)
        root = self._walk().cycle(self.topology.root, model, t0, base, tally, fresh=True)
        if self._secure is not None:
            for cid, why in self._secure.lost.items():
                tally.mark(cid, "failed", root.end_s, why)
            tally.bytes_up += self._secure.unmask_bytes_up
            tally.bytes_down += self._secure.unmask_bytes_down
            tally.ingress[Tier.EDGE] += self._secure.unmask_bytes_up
            tally.bytes_up += self._secure.outer_bytes_up
            tally.ingress[Tier.CENTER] += self._secure.outer_bytes_up
        outcome = self._close(send, tally, root.end_s)
        self._now = outcome.end_s
        params, opt_state = server_step(
            outcome, params, opt_state, partial(self._center_mean, root),
            hooks=self.hooks, pipeline=self.pipeline, optimizer=self.server_optimizer,
            broadcast=self._bc, root_seed=self.settings.root_seed,
        )  # fmt: skip
        metrics = self._metrics(r, params, root, tally, outcome, wall_s=0.0)
        system, detail = tree_detail(
            r, tally.system, self.topology.root, reports=tally.reports, status=tally.status,
            ingress=tally.nodes, fpe=self.trainer.flops_per_example, end_s=outcome.end_s,
            deadline_s=self._coordinator.policy.deadline_s,
        )  # fmt: skip
        metrics = finish_round(
            metrics.with_stats(system), outcome, hooks=self.hooks, planner=self.planner,
            reports=tally.reports,
        )  # fmt: skip
        metrics = replace(metrics, wall_round_s=time.perf_counter() - wall0)
        if failed:
            self.topology = rehome(self.topology, failed)
            log.warning("global round %d: edges %s failed; clients re-homed", r, sorted(failed))
        if self.fed_eval is not None:
            last = r == self.settings.rounds - 1
            self.fed_eval.maybe_run(self.executor, params, r, last=last, sinks=self.sinks)
        emit_round(outcome, metrics, self.sinks, self.on_round, detail=detail)
        return params, opt_state, metrics

    def _tally(
        self, r: int, t0: float, cohort: list[int], plans: Sequence[LocalPlan], failed: set[str]
    ) -> TreeTally:
        """The round in flight; under secure aggregation, the protocol's start: its
        charges on the devices and the clients that sit out (alone in their cluster)."""
        by_client = dict(zip(cohort, plans, strict=True))
        if self._secure is None:
            return TreeTally(t0, frozenset(cohort), by_client, failed)
        charges = self._secure.begin(r, self.topology.root, frozenset(cohort), failed)
        working = frozenset(cohort) - charges.sit_out.keys()
        tally = TreeTally(
            t0, working, by_client, failed, charge_s=charges.compute_s,
            charge_up=charges.bytes_up, charge_down=charges.bytes_down,
        )  # fmt: skip
        for cid, why in charges.sit_out.items():
            tally.mark(cid, "failed", t0, why)
        return tally

    def _walk(self) -> TreeWalk:
        return TreeWalk(
            self.network, self.trainer, self.executor, self.profiles, self.client_sizes,
            self._coordinator, self._bc, self._inner, self._center, self._node_ids,
            self.hier.periods,
            self.settings.weighting, self.settings.root_seed, self.settings.dropout_rate,
        )  # fmt: skip

    def _start(self, r: int, t0: float) -> SendModel:
        """The coordinator's cohort among the available clients of the tree."""
        online = self.profiles.available(derive_rng(self.settings.root_seed, r, -1, "online"))
        avail = np.intersect1d(online, np.fromiter(self.topology.root.all_clients(), np.int64))
        if self.planner is not None:
            avail = self.planner.admit(r, avail)
        (send,) = self._coordinator.handle(StartRound(r, t0, avail))
        assert isinstance(send, SendModel)
        return send

    def _close(self, send: SendModel, tally: TreeTally, end_s: float) -> RoundOutcome:
        """Tell the coordinator each cohort member's fate; it closes the round."""
        for cid in send.client_ids.tolist():
            status, arrival = tally.status.get(cid, ("failed", end_s))
            if status == "failed":
                reason = next((why for c, why in tally.failures if c == cid), "no update")
                self._coordinator.handle(ClientFailed(cid, reason))
            else:
                self._coordinator.handle(UpdateArrived(cid, arrival, 1.0))
        for cid, reason in tally.failures:
            log.info("global round %d: client %d dropped: %s", send.round_idx, cid, reason)
        (close,) = self._coordinator.handle(DeadlinePassed(max(end_s, tally.start_s)))
        assert isinstance(close, CloseRound)
        return close.outcome

    def _center_mean(self, root: NodeResult) -> FloatVector:
        """The center's aggregate; zeros when no weight reached it."""
        if self._center.weight(root.state) <= 0:
            return np.zeros(self.trainer.spec.size, dtype=np.float32)
        return self._center.finalize(root.state)

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

    def _metrics(
        self, r: int, params: FloatVector, root: NodeResult, tally: TreeTally,
        outcome: RoundOutcome, *, wall_s: float,
    ) -> RoundMetrics:  # fmt: skip
        s = self.settings
        ev = evaluate_round(
            self.trainer, self.test_data, params, r, rounds=s.rounds, eval_every=s.eval_every
        )
        client_means = self._center.client_metrics(root.state)
        train_loss = client_means.get("train_loss")
        decode_s, self._plain.decode_s = self._plain.decode_s, 0.0
        codec = codec_stats(
            uploads=tally.uploads, size=self.trainer.spec.size, bytes_up=tally.client_bytes_up,
            bytes_down=tally.client_bytes_down, receivers=tally.client_downloads,
            decode_s=decode_s, client_means=client_means,
        )  # fmt: skip
        tiers = TierStats(
            center_ingress_bytes=tally.ingress[Tier.CENTER],
            region_ingress_bytes=tally.ingress[Tier.REGION],
            edge_ingress_bytes=tally.ingress[Tier.EDGE],
            edge_rounds=tally.edge_rounds, client_updates=tally.updates,
        )  # fmt: skip
        figures = RoundFigures(
            train_loss, tally.bytes_up, tally.bytes_down, outcome.end_s - tally.start_s,
            outcome.end_s, wall_s, root.legs,
        )  # fmt: skip
        secure = None if self._secure is None else self._secure.stats()
        precision = precision_stats(tally.folded_metrics)
        counts = ClientCounts.of(outcome)
        return round_metrics(r, counts, ev, figures, codec, tiers, secure, precision)
