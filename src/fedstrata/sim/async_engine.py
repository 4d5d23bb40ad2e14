"""Buffered asynchronous federated learning on the virtual clock (FedBuff).

FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS 2022) keeps ``concurrency`` clients training at all times. Who trains, which
update counts and when the server steps are the round engine's: a
:class:`~fedstrata.coordinator.RoundCoordinator` with the buffered policy
(:mod:`fedstrata.coordinator.buffered`) dispatches clients, judges each update by its
staleness (weight ``(1 + tau) ** -0.5``; too stale: rejected), closes a server step
every ``K`` accepted updates and gives each freed slot to a new client. This module
moves time and bytes and executes its commands: a dispatch, a fold into the
:class:`~fedstrata.scheduling.FedBuffServer` buffer, a step through the server optimizer.

Time is a heap of client-completion events ordered by (virtual time, dispatch
sequence number). Training runs for real in the :class:`~fedstrata.sim.Executor`, but
lazily: the clients dispatched on one model version are trained in one batch just
before the model changes or when one of them completes. Completion times do not depend
on the training result, so this is exact; results are consumed in event order, so runs
are bit-identical for any number of workers. Memory: one float32 vector per client in
flight.

The synchronous simulator's features compose: a robust aggregator is the buffer's
state (median / trimmed mean / Krum over each step's ``K`` staleness-scaled updates);
uplink compression decodes each payload into the buffer (the upload takes the
payload's real size: the end of a client's compute is an event, its arrival follows
the upload); downlink compression (:class:`~fedstrata.sim.hooks.CompressedBroadcast`)
sends each client the compressed deltas from the version it holds. What a client's
result means (``result_problem``, ``dropped_out``, its weight, decode, legs and upload
bytes), the evaluation cadence, the ``codec`` record and the emitted events are
:mod:`fedstrata.sim.intake`'s and :mod:`fedstrata.coordinator`'s (``round_logic``,
``cadence``, ``round_metrics``), shared with the synchronous drivers.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedstrata.algorithms.server import ServerOptimizer
from fedstrata.coordinator import (
    Accept,
    Buffering,
    ClientFailed,
    CloseRound,
    Command,
    RoundCoordinator,
    RoundOutcome,
    RoundPolicy,
    SendModel,
    StartRound,
    UpdateArrived,
)
from fedstrata.coordinator.cadence import evaluate_round
from fedstrata.coordinator.round_logic import client_weight, dense_bytes
from fedstrata.coordinator.round_metrics import emit_events
from fedstrata.core.clock import VirtualClock
from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.core.training import LocalData, LocalPlan, Trainer
from fedstrata.errors import ConfigError, FedstrataError, ProtocolError
from fedstrata.monitoring import RoundMetrics, Sink
from fedstrata.monitoring.devices import RoundDetail
from fedstrata.pipeline.stage import Pipeline
from fedstrata.scheduling import FedBuffServer
from fedstrata.sim.async_window import Flying, Reported, StepWindow, step_metrics
from fedstrata.sim.engine import SimulationResult
from fedstrata.sim.executor import Executor
from fedstrata.sim.fedeval import FederatedEvaluator
from fedstrata.sim.hooks import Broadcaster, DenseBroadcast
from fedstrata.sim.intake import (
    client_legs,
    decode_result,
    dropped_out,
    result_problem,
    upload_bytes,
)
from fedstrata.sim.profiles import ProfileTable
from fedstrata.sim.tasks import ClientTask, TaskResult

__all__ = ["AsyncSettings", "AsyncSimulation"]

_COMPUTED, _ARRIVED = 0, 1  # event kinds: compute done (payload known), update arrived

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsyncSettings:
    """Length and shape of an asynchronous run.

    Attributes:
        server_updates: stop after this many server steps (>= 1).
        concurrency: clients training at any moment (>= 1).
        plan: every client's local training plan.
        eval_every: evaluate the model every this many server steps.
        root_seed: seed of client selection and local training.
        dropout_rate: probability that a dispatched client drops out (a seeded draw per
            dispatch): its update never arrives.
    """

    server_updates: int
    concurrency: int
    plan: LocalPlan
    eval_every: int = 1
    root_seed: int = 0
    dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("server_updates", "concurrency", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"AsyncSettings.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class _Dispatch:
    seq: int
    client_id: int
    version: int
    start_s: float
    legs: tuple[float, float, float]
    examples: int
    down_bytes: int = 0


@dataclass(frozen=True)
class _Result:
    """A trained client's result (no update kept if it failed) and why it failed."""

    res: TaskResult
    problem: str | None


@dataclass(frozen=True, eq=False)
class _Arrival:
    """A usable update that reached the server: its dispatch, result and dense delta."""

    dispatch: _Dispatch
    res: TaskResult
    delta: FloatVector


@dataclass(eq=False)
class _Run:
    """The model, its optimizer state and the open window, as the commands change them."""

    params: FloatVector
    opt_state: Any
    window: StepWindow
    result: SimulationResult


@dataclass(eq=False)
class AsyncSimulation:
    """FedBuff driven by a discrete-event loop; see the module docstring."""

    settings: AsyncSettings
    server: FedBuffServer  # the buffer: folds the accepted updates, makes each step
    trainer: Trainer
    executor: Executor
    client_sizes: np.ndarray
    test_data: LocalData | None
    profiles: ProfileTable
    server_optimizer: ServerOptimizer[Any]  # receives FedBuff's step as the delta
    sinks: tuple[Sink, ...] = ()
    on_update: Callable[[RoundMetrics], None] | None = None
    clock: VirtualClock = field(default_factory=VirtualClock)
    fed_eval: FederatedEvaluator | None = None  # clients evaluate on their own data
    pipeline: Pipeline | None = None  # the uplink codec (None: dense float32 deltas)
    broadcast: Broadcaster | None = None  # default: the dense model to every client

    def __post_init__(self) -> None:
        if self.settings.concurrency > len(self.profiles):
            raise ConfigError(
                f"AsyncSettings.concurrency={self.settings.concurrency} exceeds the "
                f"{len(self.profiles)} clients"
            )
        if self.pipeline is not None and self.pipeline.stages:
            raise ConfigError(
                "AsyncSimulation: pipeline stages with a server half (e.g. central DP) "
                "do not apply to buffered asynchronous steps; use a codec only"
            )
        self._size = self.trainer.spec.size
        self._bc: Broadcaster = self.broadcast or DenseBroadcast(self._size)
        self.coordinator = RoundCoordinator(
            RoundPolicy(root_seed=self.settings.root_seed),
            buffering=Buffering(self.settings.concurrency, self.server.config),
        )
        self._heap: list[tuple[float, int, int, int]] = []
        self._flight: dict[int, _Dispatch] = {}
        self._pending: list[_Dispatch] = []
        self._done: dict[int, _Result] = {}
        self._seq = 0

    def run(
        self, params: FloatVector, progress: SimulationResult | None = None
    ) -> SimulationResult:
        """Run until ``server_updates`` server steps; returns the model and metrics.

        ``progress``, when given, is filled in step by step and returned (see
        :meth:`fedstrata.sim.Simulation.run`).
        """
        start = time.perf_counter()
        result = SimulationResult(params=params) if progress is None else progress
        if self.fed_eval is not None:
            result.fed_evals = self.fed_eval.history
        opt_state = self.server_optimizer.init(params)
        run = _Run(params, opt_state, StepWindow(self.clock.now(), start), result)
        everyone = np.arange(len(self.profiles), dtype=np.int64)
        begin = StartRound(self.server.version, self.clock.now(), everyone)
        self._execute(self.coordinator.handle(begin), run)
        while self.coordinator.round_idx < self.settings.server_updates and self._heap:
            finish_s, _, cid, kind = heapq.heappop(self._heap)
            self.clock.advance_to(finish_s)
            if kind == _COMPUTED:
                self._upload(cid, run.params)
            else:
                self._arrive(cid, run)
        result.params, result.sim_time_s = run.params, self.clock.now()
        result.wall_s = time.perf_counter() - start
        return result

    def _execute(
        self, commands: list[Command], run: _Run, arrival: _Arrival | None = None
    ) -> None:
        """Carry out the coordinator's commands in order (a rejected update is dropped;
        the step's outcome counts it)."""
        for command in commands:
            if isinstance(command, SendModel):
                for cid in command.client_ids.tolist():
                    self._dispatch(int(cid), command.round_idx, run.window)
            elif isinstance(command, Accept):
                if arrival is None or arrival.dispatch.client_id != command.client_id:
                    raise ProtocolError(f"accepted client {command.client_id} did not report")
                self._fold(command, arrival, run.window)
            elif isinstance(command, CloseRound):
                self._step(command.outcome, run)

    def _step(self, outcome: RoundOutcome, run: _Run) -> None:
        """The server step the coordinator closed: apply the buffer, evaluate, report."""
        w = run.window
        applied = self.server.flush(outcome.accepted[-1], w.taus[-1])
        if applied.new_version != outcome.round_idx + 1:
            raise ProtocolError(
                f"the FedBuff buffer reached version {applied.new_version}, "
                f"the coordinator closed step {outcome.round_idx}"
            )
        self._train_pending(run.params)  # they were dispatched on the old model
        run.params, run.opt_state = self.server_optimizer.step(
            run.params, applied.step, run.opt_state
        )
        self._bc.publish(run.params, RoundContext(applied.new_version, self.settings.root_seed))
        metrics, detail = self._metrics(outcome, run.params, w)
        run.result.rounds.append(metrics)
        run.result.params = run.params
        self._federated_eval(run.params, metrics.round_idx)
        emit_events(
            metrics.round_idx, outcome.failed, metrics, self.sinks, self.on_update, detail=detail
        )
        run.window = StepWindow(self.clock.now(), time.perf_counter())

    def _federated_eval(self, params: FloatVector, step: int) -> None:
        """Federated evaluation after server step ``step`` when due (the executor is
        idle between server steps)."""
        if self.fed_eval is not None:
            last = step + 1 >= self.settings.server_updates
            self.fed_eval.maybe_run(self.executor, params, step, last=last, sinks=self.sinks)

    # -------------------------------------------------------------- dispatch

    def _dispatch(self, cid: int, version: int, window: StepWindow) -> None:
        """Start client ``cid`` on model ``version`` (the current one).

        Dense uploads have a known size, so the arrival is scheduled at once; an
        encoded upload's size is known only after training, so the end of the
        client's compute is scheduled instead (see :meth:`_upload`).
        """
        examples = self.settings.plan.num_samples(int(self.client_sizes[cid]))
        down_bytes = self._bc.download_bytes(cid)
        legs = self._legs(cid, down_bytes, dense_bytes(self._size))
        now = self.clock.now()
        d = _Dispatch(self._seq, cid, version, now, legs, examples, down_bytes)
        self._seq += 1
        self._flight[cid] = d
        self._pending.append(d)
        if self.pipeline is None:
            heapq.heappush(self._heap, (now + sum(legs), d.seq, cid, _ARRIVED))
        else:
            heapq.heappush(self._heap, (now + legs[0] + legs[1], d.seq, cid, _COMPUTED))
        window.bytes_down += down_bytes
        window.dispatched += 1

    def _legs(self, cid: int, down_bytes: int, up_bytes: int) -> tuple[float, float, float]:
        return client_legs(
            self.profiles, self.client_sizes, self.trainer.flops_per_example,
            cid=cid, plan=self.settings.plan, down_bytes=down_bytes, up_bytes=up_bytes,
        )  # fmt: skip

    def _upload(self, cid: int, params: FloatVector) -> None:
        """Client ``cid`` finished computing: schedule its arrival after the upload of
        its payload's real size (a failed client reports after a dense-sized upload)."""
        d = self._flight[cid]
        if d.seq not in self._done:
            self._train_pending(params)
        legs = self._legs(cid, 0, upload_bytes(self._done[d.seq].res, self._size))
        d = replace(d, legs=(d.legs[0], d.legs[1], legs[2]))
        self._flight[cid] = d
        heapq.heappush(self._heap, (self.clock.now() + legs[2], d.seq, cid, _ARRIVED))

    def _train_pending(self, params: FloatVector) -> None:
        """Train every client dispatched on the current version, in dispatch order."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        tasks = [
            ClientTask(i, d.client_id, d.seq, self.settings.plan) for i, d in enumerate(batch)
        ]
        s = self.settings
        for res in self.executor.run(self._bc.model_for_clients(params), tasks):
            seq = batch[res.index].seq  # a dispatch's seq is its dropout draw's "round"
            problem = result_problem(res, self.trainer.spec) or dropped_out(
                s.dropout_rate, s.root_seed, seq, res.client_id
            )
            if problem is not None:  # no update kept; it reports a dense-sized upload
                res = replace(res, vector=None, payload=None)
            elif res.vector is not None:
                res = replace(res, vector=res.vector.copy())
            self._done[seq] = _Result(res, problem)

    # --------------------------------------------------------------- arrivals

    def _arrive(self, cid: int, run: _Run) -> None:
        """Client ``cid``'s result reached the server: report it to the coordinator (a
        usable update, or why not) and carry out what it answers."""
        d = self._flight.pop(cid)
        if d.seq not in self._done:
            self._train_pending(run.params)
        done, w = self._done.pop(d.seq), run.window
        res, problem, delta = done.res, done.problem, None
        if problem is None:
            w.bytes_up += upload_bytes(res, self._size)
            w.uploads += 1
            delta, problem = self._decoded(res, w)
        weight = client_weight(res.num_examples, "examples")
        up_bytes = 0 if done.problem is not None else upload_bytes(res, self._size)
        if delta is None or not weight > 0:
            reason = problem or f"no usable update (weight {weight:g})"
            log.info("client %d failed: %s", d.client_id, reason)
            w.reported.append(_reported(d, up_bytes, False, self.clock.now()))
            self._execute(self.coordinator.handle(ClientFailed(d.client_id, reason)), run)
            return
        event = UpdateArrived(d.client_id, self.clock.now(), weight, d.version)
        commands = self.coordinator.handle(event)
        folded = any(isinstance(c, Accept) for c in commands)
        w.reported.append(_reported(d, up_bytes, folded, self.clock.now()))
        self._execute(commands, run, _Arrival(d, res, delta))

    def _fold(self, accept: Accept, arrival: _Arrival, w: StepWindow) -> None:
        """Fold an accepted update into the buffer, scaled by its staleness weight."""
        d, res = arrival.dispatch, arrival.res
        self.server.fold(d.client_id, arrival.delta, accept.weight, accept.staleness, accept.scale)
        w.taus.append(accept.staleness)
        w.examples += d.examples
        w.last = d.legs
        w.folded_metrics.append(res.metrics)
        for key, values in (("train_loss", w.losses), ("encode_s", w.encode_s)):
            if key in res.metrics:
                values.append(res.metrics[key])

    def _decoded(self, res: TaskResult, w: StepWindow) -> tuple[FloatVector | None, str | None]:
        """A usable result's dense update, or why none (a malformed payload)."""
        try:
            delta, seconds = decode_result(res, self.pipeline)
        except FedstrataError as exc:
            return None, str(exc)
        w.decode_s += seconds
        return delta, None

    # ---------------------------------------------------------------- metrics

    def _metrics(
        self, outcome: RoundOutcome, params: FloatVector, w: StepWindow
    ) -> tuple[RoundMetrics, RoundDetail]:
        s = self.settings
        ev = evaluate_round(
            self.trainer, self.test_data, params, outcome.round_idx,
            rounds=s.server_updates, eval_every=s.eval_every,
        )  # fmt: skip
        now, in_flight = self.clock.now(), len(self._flight)
        return step_metrics(
            outcome, w, ev, now_s=now, in_flight=in_flight, size=self._size,
            profiles=self.profiles, fpe=self.trainer.flops_per_example,
            flying=[
                Flying(d.client_id, d.start_s + d.legs[0], d.legs[1], d.examples)
                for d in self._flight.values()
            ],
        )  # fmt: skip


def _reported(d: _Dispatch, up_bytes: int, folded: bool, at_s: float) -> Reported:
    return Reported(
        d.client_id, d.start_s, d.legs, d.down_bytes, up_bytes, d.examples, folded, at_s
    )
