"""The discrete-event simulator: real training, simulated time.

Each round the :class:`~fedstrata.coordinator.RoundCoordinator` picks a cohort; the
executor trains every member for real (in worker processes); the device profiles turn
each client's work and bytes into virtual time — downlink (latency + model bytes /
downlink bandwidth), compute (examples x FLOPs per example / device FLOP/s) and uplink
(latency + update bytes / uplink bandwidth). Arrival times are fed to the coordinator
as events, which accepts, rejects (late, duplicate, unknown) or drops (failed, NaN/Inf,
malformed) each update. Accepted updates stream into the aggregator in cohort order,
so memory stays O(model) and results are bit-identical for any number of workers.

For synchronous rounds the acceptance of an update depends only on its own arrival
time, so folding updates in cohort order is equivalent to processing the arrival
events in time order (up to the floating-point order of the sum, which is fixed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

import numpy as np

from fedstrata.aggregation import WeightedMean
from fedstrata.aggregation.protocol import Aggregator
from fedstrata.algorithms.server import ServerOptimizer
from fedstrata.coordinator import (
    ClientFailed,
    CloseRound,
    DeadlinePassed,
    Reject,
    RoundCoordinator,
    RoundOutcome,
    SendModel,
    StartRound,
    UpdateArrived,
)
from fedstrata.coordinator.cadence import evaluate_round
from fedstrata.coordinator.hooks import RoundHook
from fedstrata.coordinator.round_logic import client_weight, dense_bytes, server_step, start_hooks
from fedstrata.coordinator.round_metrics import (
    ClientCounts,
    RoundFigures,
    codec_stats,
    emit_round,
    round_metrics,
)
from fedstrata.coordinator.system_tally import SystemTally
from fedstrata.core.clock import VirtualClock
from fedstrata.core.context import derive_rng
from fedstrata.core.metrics import CodecStats, precision_stats
from fedstrata.core.params import FloatVector
from fedstrata.core.statepart import StatePart
from fedstrata.core.training import LocalData, LocalPlan, Trainer
from fedstrata.errors import FedstrataError
from fedstrata.monitoring import FedEvalMetrics, RoundMetrics, Sink
from fedstrata.monitoring.devices import RoundDetail
from fedstrata.pipeline.stage import Pipeline
from fedstrata.sim.checkpointing import Components, StateCallback, engine_parts, restore_engine
from fedstrata.sim.executor import Executor
from fedstrata.sim.fedeval import FederatedEvaluator
from fedstrata.sim.hooks import (
    Broadcaster,
    ClientPlanner,
    ClientReport,
    DenseBroadcast,
)
from fedstrata.sim.intake import (
    client_legs,
    dropped_out,
    finish_round,
    fold_result,
    result_problem,
    system_tally,
    upload_bytes,
)
from fedstrata.sim.profiles import ProfileTable
from fedstrata.sim.protocol_cost import ProtocolCharge, ProtocolCosts, charge
from fedstrata.sim.tasks import ClientTask, TaskResult

__all__ = ["SimSettings", "Simulation", "SimulationResult"]

ClientStatus = Literal["accepted", "late", "failed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimSettings:
    """Round count, local training plan and evaluation cadence of a simulation."""

    rounds: int
    plan: LocalPlan
    eval_every: int = 1
    root_seed: int = 0
    weighting: Literal["examples", "uniform"] = "examples"  # DP needs uniform
    dropout_rate: float = 0.0  # a selected client drops out after receiving the model


@dataclass
class SimulationResult:
    """Final parameters and per-round metrics of a finished simulation."""

    params: FloatVector
    rounds: list[RoundMetrics] = field(default_factory=list)
    wall_s: float = 0.0
    sim_time_s: float = 0.0
    stopped_reason: str | None = None
    fed_evals: list[FedEvalMetrics] = field(default_factory=list)  # federated evaluations

    @property
    def final_accuracy(self) -> float | None:
        accs = [m.accuracy for m in self.rounds if m.accuracy is not None]
        return accs[-1] if accs else None


@dataclass
class _RoundTally:
    """Running figures of the round in flight."""

    start_s: float
    size: int
    plans: Sequence[LocalPlan] = ()
    reports: list[ClientReport] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    uploads: int = 0
    last_arrival: float = 0.0
    critical: tuple[float, float, float] = (0.0, 0.0, 0.0)
    any_late: bool = False
    protocol_s: float = 0.0  # simulated seconds a protocol (secure aggregation) added
    protocol_bytes_up: int = 0  # the protocol's own uplink bytes (keys, shares)
    folded_metrics: list[Mapping[str, float]] = field(default_factory=list)
    system: SystemTally | None = None  # devices and links (the twelve metrics)
    deadline_s: float | None = None


@dataclass(eq=False)
class Simulation:
    """Runs a federation on a virtual clock; see the module docstring."""

    settings: SimSettings
    coordinator: RoundCoordinator
    trainer: Trainer  # server-side: evaluation and FLOP counts
    executor: Executor
    client_sizes: np.ndarray
    test_data: LocalData | None
    profiles: ProfileTable
    server_optimizer: ServerOptimizer[Any]
    aggregator: Aggregator[Any] = field(default_factory=WeightedMean)
    pipeline: Pipeline | None = None
    sinks: tuple[Sink, ...] = ()
    on_round: Callable[[RoundMetrics], None] | None = None
    clock: VirtualClock = field(default_factory=VirtualClock)
    broadcast: Broadcaster | None = None  # default: the dense model to everyone
    hooks: tuple[RoundHook, ...] = ()
    planner: ClientPlanner | None = None  # default: every client runs settings.plan
    fed_eval: FederatedEvaluator | None = None  # clients evaluate on their own data
    on_state: StateCallback | None = None  # told the engine's state after each round

    def __post_init__(self) -> None:
        self._bc: Broadcaster = self.broadcast or DenseBroadcast(self.trainer.spec.size)
        self._decode_s = 0.0  # server time decoding payloads in the round in flight

    def run(
        self,
        params: FloatVector,
        progress: SimulationResult | None = None,
        resume: Mapping[str, StatePart] | None = None,
    ) -> SimulationResult:
        """Run every round from ``params``; returns the final model and metrics.

        ``progress``, when given, is filled in and returned: after each round it holds
        that round's model and the metrics so far, so an interrupted caller keeps them.
        ``resume``: a checkpoint's parts (:mod:`fedstrata.sim.checkpointing`); the run
        continues after the rounds they hold, bit for bit as if never stopped.

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
            at = restore_engine(self._components(), resume, self.trainer.spec.size)
            first, params, opt_state = at.rounds_done, at.params, at.opt_state
            self.clock.advance_to(at.clock_s)
            result.params = params
        for round_idx in range(first, self.settings.rounds):
            stop = start_hooks(self.hooks, round_idx)
            if stop is not None:
                log.warning("stopping before round %d: %s", round_idx, stop)
                result.stopped_reason = stop
                break
            params, opt_state, metrics = self.run_round(round_idx, params, opt_state)
            result.rounds.append(metrics)
            result.params = params
            if self.on_state is not None:
                done, now = round_idx + 1, self.clock.now()
                self.on_state(done, engine_parts(self._components(), done, now, params, opt_state))
        result.params = params
        result.wall_s = time.perf_counter() - start
        result.sim_time_s = self.clock.now()
        return result

    def _components(self) -> Components:
        return Components(
            "flat", self.coordinator, self.hooks, self._bc, self.planner, self.server_optimizer
        )

    def run_round(
        self, round_idx: int, params: FloatVector, opt_state: object
    ) -> tuple[FloatVector, object, RoundMetrics]:
        """One synchronous round: select, train, fold, apply, evaluate, report."""
        wall0 = time.perf_counter()
        t0 = self.clock.now()
        avail = self.profiles.available(
            derive_rng(self.settings.root_seed, round_idx, -1, "online")
        )
        if self.planner is not None:
            avail = self.planner.admit(round_idx, avail)
        (send,) = self.coordinator.handle(StartRound(round_idx, t0, avail))
        assert isinstance(send, SendModel)
        tally = _RoundTally(t0, params.shape[0], last_arrival=t0, deadline_s=send.deadline_s)
        tally.system = system_tally(self.profiles, t0, send.client_ids.tolist(), params.shape[0])
        state = self.aggregator.init(params.shape[0])
        plans: Sequence[LocalPlan] = [self.settings.plan] * send.client_ids.size
        if self.planner is not None:
            plans = self.planner.plans(round_idx, send.client_ids, self.settings.plan)
        tally.plans = plans
        tasks = [ClientTask(i, int(c), round_idx, plans[i]) for i, c in enumerate(send.client_ids)]
        for res in self.executor.run(self._bc.model_for_clients(params), tasks):
            state = self._receive(res, tally, state)
        end = self._round_end(send, tally)
        (close,) = self.coordinator.handle(DeadlinePassed(end))
        assert isinstance(close, CloseRound)
        self.clock.advance_to(end)
        outcome = close.outcome
        params, opt_state = server_step(
            outcome, params, opt_state, partial(self.aggregator.finalize, state),
            hooks=self.hooks, pipeline=self.pipeline, optimizer=self.server_optimizer,
            broadcast=self._bc, root_seed=self.settings.root_seed,
        )  # fmt: skip
        extra = self._protocol_charge(round_idx, tally)
        outcome = replace(outcome, end_s=outcome.end_s + extra.seconds)
        self.clock.advance_to(outcome.end_s)
        client_means = self.aggregator.finalize_metrics(state)
        train_loss = client_means.get("train_loss")
        metrics = self._metrics(outcome, params, tally, time.perf_counter() - wall0, train_loss)
        assert tally.system is not None
        system, devices = tally.system.finish(outcome.end_s)
        metrics = finish_round(
            metrics.with_stats(
                self._codec_stats(tally, client_means), precision_stats(tally.folded_metrics),
                system,
            ), outcome,
            hooks=self.hooks, planner=self.planner, reports=tally.reports,
        )  # fmt: skip
        if self.fed_eval is not None:
            last = round_idx == self.settings.rounds - 1
            self.fed_eval.maybe_run(self.executor, params, round_idx, last=last, sinks=self.sinks)
        detail = RoundDetail(round_idx, devices)
        emit_round(outcome, metrics, self.sinks, self.on_round, detail=detail)
        return params, opt_state, metrics

    def _protocol_charge(self, round_idx: int, tally: _RoundTally) -> ProtocolCharge:
        """Secure aggregation's legs and bytes this round (Issue 12 part 4)."""
        total = ProtocolCharge()
        for hook in self.hooks:
            cost = hook.round_cost(round_idx) if isinstance(hook, ProtocolCosts) else None
            if cost is not None:
                extra = charge(cost, self.profiles)
                tally.bytes_up += extra.bytes_up
                tally.protocol_bytes_up += extra.bytes_up
                tally.bytes_down += extra.bytes_down
                total = ProtocolCharge(total.seconds + extra.seconds)
        tally.protocol_s = total.seconds
        return total

    def _receive(self, res: TaskResult, tally: _RoundTally, state: object) -> object:
        """Account, time, and (if the coordinator accepts it) fold one client's result."""
        cid = res.client_id
        down_bytes = self._bc.download_bytes(cid)
        tally.bytes_down += down_bytes
        plan = tally.plans[res.index]
        s = self.settings
        problem = result_problem(res, self.trainer.spec) or dropped_out(
            s.dropout_rate, s.root_seed, self.coordinator.round_idx, cid
        )
        up_bytes = 0 if problem is not None else upload_bytes(res, tally.size)
        legs = client_legs(
            self.profiles, self.client_sizes, self.trainer.flops_per_example,
            cid=cid, plan=plan, down_bytes=down_bytes, up_bytes=up_bytes,
        )  # fmt: skip
        system = tally.system
        assert system is not None
        self._account(
            system, cid, plan, legs,
            down_bytes=down_bytes, up_bytes=up_bytes if problem is None else None,
        )  # fmt: skip
        if problem is not None:  # failed once it had the model: no training counted
            self.coordinator.handle(ClientFailed(cid, problem))
            system.failed(cid, tally.start_s + legs[0])
            self._report(tally, res, plan, (0.0, 0.0, 0.0), "failed")
            return state
        tally.bytes_up += up_bytes
        tally.uploads += 1
        arrival = tally.start_s + sum(legs)
        weight = client_weight(res.num_examples, self.settings.weighting)
        (cmd,) = self.coordinator.handle(UpdateArrived(cid, arrival, weight))
        if isinstance(cmd, Reject):
            tally.any_late = tally.any_late or cmd.late
            late_at = tally.deadline_s if cmd.late and tally.deadline_s is not None else arrival
            system.failed(cid, late_at, late=cmd.late)
            self._report(tally, res, plan, legs, "late" if cmd.late else "failed")
            return state
        try:
            state, decode_s = fold_result(self.aggregator, state, res, weight, self.pipeline)
            self._decode_s += decode_s
        except FedstrataError as exc:  # malformed payload: dropped, sum untouched
            self.coordinator.handle(ClientFailed(cid, str(exc)))
            system.failed(cid, arrival)
            self._report(tally, res, plan, legs, "failed")
            return state
        system.accepted(cid, arrival)
        self._report(tally, res, plan, legs, "accepted")
        tally.folded_metrics.append(res.metrics)
        if tally.start_s + sum(legs) > tally.last_arrival:
            tally.last_arrival, tally.critical = tally.start_s + sum(legs), legs
        return state

    def _account(
        self, system: SystemTally, cid: int, plan: LocalPlan,
        legs: tuple[float, float, float], *, down_bytes: int, up_bytes: int | None,
    ) -> None:  # fmt: skip
        """The client's download, and (``up_bytes`` given) its training and upload."""
        p, start = self.profiles, system.start_s
        system.transfer(cid, down_bytes, legs[0], up=False, bandwidth_bps=p.downlink_bps[cid])
        if up_bytes is None:
            return
        examples = plan.num_samples(int(self.client_sizes[cid]))
        flops = examples * self.trainer.flops_per_example
        system.trained(cid, start + legs[0], legs[1], flops)
        system.transfer(cid, up_bytes, legs[2], up=True, bandwidth_bps=p.uplink_bps[cid])

    def _report(
        self,
        tally: _RoundTally,
        res: TaskResult,
        plan: LocalPlan,
        legs: tuple[float, float, float],
        status: ClientStatus,
    ) -> None:
        if self.planner is None:
            return
        examples = plan.num_samples(int(self.client_sizes[res.client_id]))
        loss = res.metrics.get("train_loss")
        tally.reports.append(
            ClientReport(res.client_id, examples, *legs, tally.start_s + sum(legs), status, loss)
        )

    def _codec_stats(self, tally: _RoundTally, client_means: Mapping[str, float]) -> CodecStats:
        decode_s, self._decode_s = self._decode_s, 0.0
        stats = codec_stats(
            uploads=tally.uploads, size=tally.size, bytes_up=tally.bytes_up,
            bytes_down=tally.bytes_down, receivers=len(tally.plans), decode_s=decode_s,
            client_means=client_means,
        )  # fmt: skip
        if not tally.protocol_bytes_up:
            return stats
        payload = tally.bytes_up - tally.protocol_bytes_up  # the codec's own ratio
        return replace(
            stats,
            payload_ratio=tally.uploads * dense_bytes(tally.size) / max(payload, 1),
            protocol_sim_s=tally.protocol_s,
        )

    @staticmethod
    def _round_end(send: SendModel, tally: _RoundTally) -> float:
        """The last accepted arrival, or the deadline when someone missed it."""
        if send.deadline_s is not None and tally.any_late:
            return send.deadline_s
        return tally.last_arrival

    def _metrics(
        self,
        outcome: RoundOutcome,
        params: FloatVector,
        tally: _RoundTally,
        wall_s: float,
        train_loss: float | None,
    ) -> RoundMetrics:
        s = self.settings
        ev = evaluate_round(
            self.trainer, self.test_data, params, outcome.round_idx,
            rounds=s.rounds, eval_every=s.eval_every,
        )  # fmt: skip
        figures = RoundFigures(
            train_loss, tally.bytes_up, tally.bytes_down, outcome.end_s - tally.start_s,
            outcome.end_s, wall_s, tally.critical,
        )  # fmt: skip
        return round_metrics(outcome.round_idx, ClientCounts.of(outcome), ev, figures)
