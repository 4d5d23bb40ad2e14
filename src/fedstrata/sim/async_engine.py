"""Buffered asynchronous federated learning on the virtual clock (FedBuff).

FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS 2022) keeps a fixed number of clients training at all times. Each client
trains on the model version current when it was dispatched; its update arrives after
its simulated download + compute + upload time and is folded into the
:class:`~fedstrata.scheduling.FedBuffServer` buffer with the staleness weight
``(1 + tau) ** -0.5`` (``tau``: server versions since its dispatch). Every ``K``
accepted arrivals the server applies a step (through the simulation's server
optimizer) and the freed slots go to new clients, who train from the new model.

This is a true discrete-event loop: a heap of client-completion events ordered by
(virtual time, dispatch sequence number). Training runs for real in the
:class:`~fedstrata.sim.Executor` but lazily: the clients dispatched while the model is
at one version are trained together in one batch (one ``executor.run`` call on that
version's parameters) just before the model changes or when one of them completes,
whichever comes first. Completion times do not depend on the training result, so this
is exact; results are consumed in event order, so runs are bit-identical for any
number of workers. Memory: one float32 vector per client in flight.

The features of the synchronous simulator compose:

* **robust aggregation**: the server's buffer is the configured aggregator's state,
  so median / trimmed mean / Krum run over the ``K`` staleness-scaled updates of each
  server step (O(K x model) memory; :class:`~fedstrata.scheduling.FedBuffServer`);
* **uplink compression**: clients encode with the pipeline's codec (error feedback per
  client, in the codec's state store), the server decodes each payload into the
  buffer; a malformed payload drops that client. The upload takes the payload's real
  size: a client's completion is an event at the end of its compute, when its payload
  is known, followed by its arrival after the upload;
* **downlink compression**: a :class:`~fedstrata.sim.hooks.CompressedBroadcast`
  sends each dispatched client the compressed deltas from the version it holds to
  the current one (clients train from the broadcast replica; the server keeps the
  exact model); the download's bytes and seconds are those of that message.

What a client's result means is written once, shared with the synchronous drivers:
why it is unusable (:mod:`fedstrata.sim.intake`: ``result_problem``, ``dropped_out``),
its legs and upload bytes (the same module), its weight and decode
(:mod:`fedstrata.coordinator.round_logic`), the evaluation cadence
(:mod:`fedstrata.coordinator.cadence`), the round record with its ``codec`` figures and
the emitted events (failures, then the step's metrics;
:mod:`fedstrata.coordinator.round_metrics`). Only the buffer
(staleness weights, ``K``), the event heap and the ``fedbuff`` record are FedBuff's.
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
from fedstrata.coordinator.cadence import evaluate_round
from fedstrata.coordinator.round_logic import client_weight, dense_bytes
from fedstrata.coordinator.round_metrics import (
    ClientCounts,
    RoundFigures,
    codec_stats,
    emit_events,
    round_metrics,
)
from fedstrata.coordinator.summary import describe_losses
from fedstrata.core.clock import VirtualClock
from fedstrata.core.context import RoundContext, derive_seed
from fedstrata.core.metrics import AsyncStats
from fedstrata.core.params import FloatVector
from fedstrata.core.training import LocalData, LocalPlan, Trainer
from fedstrata.errors import ConfigError, FedstrataError
from fedstrata.monitoring import RoundMetrics, Sink
from fedstrata.pipeline.stage import Pipeline
from fedstrata.scheduling import Accepted, Applied, FedBuffServer, Rejected
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

Decision = Accepted | Applied | Rejected
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


@dataclass(frozen=True)
class _Result:
    """A trained client's result (no update kept if it failed) and why it failed."""

    res: TaskResult
    problem: str | None


@dataclass
class _Window:
    """Figures accumulated since the last server step."""

    start_s: float
    wall0: float
    arrivals: int = 0
    failed: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)  # (client, reason)
    stale: int = 0
    examples: int = 0
    taus: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    uploads: int = 0
    dispatched: int = 0
    decode_s: float = 0.0
    encode_s: list[float] = field(default_factory=list)
    last: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(eq=False)
class AsyncSimulation:
    """FedBuff driven by a discrete-event loop; see the module docstring."""

    settings: AsyncSettings
    server: FedBuffServer
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
        self._heap: list[tuple[float, int, int, int]] = []
        self._flight: dict[int, _Dispatch] = {}
        self._pending: list[_Dispatch] = []
        self._done: dict[int, _Result] = {}
        self._seq = 0
        self._rng = np.random.default_rng(derive_seed(self.settings.root_seed, 0, -1, "async"))

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
        window = _Window(self.clock.now(), start)
        for _ in range(self.settings.concurrency):
            self._dispatch(window)
        while self.server.version < self.settings.server_updates and self._heap:
            finish_s, _, cid, kind = heapq.heappop(self._heap)
            self.clock.advance_to(finish_s)
            if kind == _COMPUTED:
                self._upload(cid, params)
                continue
            decision = self._arrive(cid, params, window)
            if isinstance(decision, Applied):
                self._train_pending(params)  # they were dispatched on the old model
                params, opt_state = self.server_optimizer.step(params, decision.step, opt_state)
                ctx = RoundContext(decision.new_version, self.settings.root_seed)
                self._bc.publish(params, ctx)
                metrics = self._metrics(decision, params, window)
                result.rounds.append(metrics)
                result.params = params
                self._federated_eval(params, metrics.round_idx)
                failed, on_update = window.failures, self.on_update
                emit_events(metrics.round_idx, failed, metrics, self.sinks, on_update)
                self._log_losses(window)
                window = _Window(self.clock.now(), time.perf_counter())
            self._dispatch(window)
        result.params, result.sim_time_s = params, self.clock.now()
        result.wall_s = time.perf_counter() - start
        return result

    def _federated_eval(self, params: FloatVector, step: int) -> None:
        """Federated evaluation after server step ``step`` when due (the executor is
        idle between server steps)."""
        if self.fed_eval is not None:
            last = step + 1 >= self.settings.server_updates
            self.fed_eval.maybe_run(self.executor, params, step, last=last, sinks=self.sinks)

    def _log_losses(self, w: _Window) -> None:
        """One warning per server step for the clients that failed since the last one."""
        losses = describe_losses(w.failures, (), w.arrivals)
        if losses is not None:
            log.warning("server step %d: %s", self.server.version, losses)

    # -------------------------------------------------------------- dispatch

    def _pick(self) -> int:
        busy = np.fromiter(self._flight.keys(), dtype=np.int64, count=len(self._flight))
        idle = np.setdiff1d(np.arange(len(self.profiles), dtype=np.int64), busy)
        return int(idle[self._rng.integers(idle.size)])

    def _dispatch(self, window: _Window) -> None:
        """Start one new client on the current model version.

        Dense uploads have a known size, so the arrival is scheduled at once; an
        encoded upload's size is known only after training, so the end of the
        client's compute is scheduled instead (see :meth:`_upload`).
        """
        cid = self._pick()
        examples = self.settings.plan.num_samples(int(self.client_sizes[cid]))
        down_bytes = self._bc.download_bytes(cid)
        legs = self._legs(cid, down_bytes, dense_bytes(self._size))
        now = self.clock.now()
        d = _Dispatch(self._seq, cid, self.server.version, now, legs, examples)
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

    def _arrive(self, cid: int, params: FloatVector, w: _Window) -> Decision | None:
        """Fold the update of client ``cid`` into the buffer (None: it failed)."""
        d = self._flight.pop(cid)
        if d.seq not in self._done:
            self._train_pending(params)
        done = self._done.pop(d.seq)
        res, problem, delta = done.res, done.problem, None
        w.arrivals += 1
        if problem is None:
            w.bytes_up += upload_bytes(res, self._size)
            w.uploads += 1
            delta, problem = self._decoded(res, w)
        weight = client_weight(res.num_examples, "examples")
        if delta is None or not weight > 0:
            reason = problem or f"no usable update (weight {weight:g})"
            log.info("client %d failed: %s", d.client_id, reason)
            w.failed += 1
            w.failures.append((d.client_id, reason))
            return None
        decision = self.server.receive(d.client_id, delta, d.version, weight)
        if isinstance(decision, Rejected):
            w.stale += 1
            return decision
        w.taus.append(decision.staleness)
        w.examples += d.examples
        w.last = d.legs
        for key, values in (("train_loss", w.losses), ("encode_s", w.encode_s)):
            if key in res.metrics:
                values.append(res.metrics[key])
        return decision

    def _decoded(self, res: TaskResult, w: _Window) -> tuple[FloatVector | None, str | None]:
        """A usable result's dense update, or why none (a malformed payload)."""
        try:
            delta, seconds = decode_result(res, self.pipeline)
        except FedstrataError as exc:
            return None, str(exc)
        w.decode_s += seconds
        return delta, None

    # ---------------------------------------------------------------- metrics

    def _metrics(self, decision: Applied, params: FloatVector, w: _Window) -> RoundMetrics:
        idx, s = decision.new_version - 1, self.settings
        ev = evaluate_round(
            self.trainer, self.test_data, params, idx,
            rounds=s.server_updates, eval_every=s.eval_every,
        )  # fmt: skip
        now = self.clock.now()
        span = now - w.start_s
        taus = np.asarray(w.taus, dtype=np.float64)
        fedbuff = AsyncStats(
            staleness_mean=float(taus.mean()) if taus.size else 0.0,
            staleness_max=float(taus.max()) if taus.size else 0.0,
            in_flight=len(self._flight),
            throughput_eps=w.examples / span if span > 0 else 0.0,
            last_client_s=float(sum(w.last)),
        )
        client_means = {"encode_s": float(np.mean(w.encode_s))} if w.encode_s else {}
        codec = codec_stats(
            uploads=w.uploads, size=self._size, bytes_up=w.bytes_up, bytes_down=w.bytes_down,
            receivers=w.dispatched, decode_s=w.decode_s, client_means=client_means,
        )  # fmt: skip
        counts = ClientCounts(w.arrivals, len(w.taus), w.failed, w.stale)
        train_loss = float(np.mean(w.losses)) if w.losses else None
        wall_s = time.perf_counter() - w.wall0
        # no critical path (zero legs): clients overlap server steps
        figures = RoundFigures(train_loss, w.bytes_up, w.bytes_down, span, now, wall_s)
        return round_metrics(idx, counts, ev, figures, codec, fedbuff)
