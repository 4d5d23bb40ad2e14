"""The client agent: trains when the center asks and submits its update.

:class:`ClientAgent` wraps a :class:`~fedstrata.core.Trainer`, the client's local data
and (optionally) the uplink :class:`~fedstrata.pipeline.Pipeline`. It talks to the
center through a :class:`~fedstrata.runtime.client_link.CenterLink` —
:class:`~fedstrata.runtime.link.GrpcLink` in deployment. Training runs in a worker
thread so the event loop keeps serving the session's keepalives.

Ownership and cancellation: :meth:`ClientAgent.run` owns the session for its whole
life and returns when the center says the run is over; cancelling it closes the
session, which the center treats as the client leaving.

Liveness: when the connection breaks (:class:`~fedstrata.errors.TransportError`), the
agent reconnects (``CenterLink.reconnect``) after an exponential backoff with jitter
(:class:`~fedstrata.runtime.client_link.Backoff`; the random source and the sleep are
injected) and opens a new session. The center has failed it in the round it was cut
from; it is selectable again from the next round. ``Backoff.attempts`` consecutive
failures give up: :meth:`run` raises a :class:`~fedstrata.errors.TransportError` that
says so (the CLI exits non-zero with it). Every backoff is logged (WARNING).

Partial work: a task with :class:`~fedstrata.runtime.sched_reports.PartialWork` terms
(deadline scheduling) is trained step by step against its deadline, stopped when the
client's time is up and settled as the simulator settles it
(:mod:`fedstrata.runtime.settle`): the steps done travel with the round's timings, a
straggler sends nothing, and under secure aggregation the fraction done is folded
into the weight before masking.

Run identity: tasks name their run. A task of a new run (a restarted center) resets the
agent's per-run state (the uplink pipeline with its error-feedback residuals, from
``new_pipeline``); within one run, a task whose round does not follow the last one is
refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np

from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.core.state import MemoryStateStore
from fedstrata.core.training import LocalData, Trainer
from fedstrata.errors import (
    PayloadError,
    ProtocolError,
    RunEndedError,
    TransportError,
)
from fedstrata.pipeline.dense import DenseCodec
from fedstrata.pipeline.stage import Pipeline
from fedstrata.runtime.center import TaskKind, TaskSpec
from fedstrata.runtime.client_link import Backoff, CenterLink, ClientReport, Sleep, decode_model
from fedstrata.runtime.client_terms import ResidualTerms
from fedstrata.runtime.downlink import DownlinkReplica
from fedstrata.runtime.fedeval_parts import answer_evaluation
from fedstrata.runtime.sched_reports import DeviceReport, RoundTimings
from fedstrata.runtime.secagg_client import Prepared, SecureClient
from fedstrata.runtime.settle import LocalOutcome, LocalTraining, StopRule

__all__ = ["ClientAgent"]

log = logging.getLogger(__name__)


class ClientAgent:
    """One federated client; see the module docstring.

    Args:
        link: the connection to the center (entered by the caller).
        client_id: this client's id (its data partition).
        trainer: local trainer.
        data: local training data.
        pipeline: uplink encode stages and codec (None: dense float32).
        backoff: reconnection policy (None: a broken connection ends :meth:`run`).
        rng: jitter source of the backoff (default: seeded by ``client_id``).
        sleep: awaits a delay in seconds (tests inject a fake).
        new_pipeline: builds a fresh uplink pipeline for a new run (None: keep
            ``pipeline``, which must then hold no per-run state).
        downlink: the model held under downlink compression (None: dense downloads).
        profile: this device, reported to the center's scheduler with each round's
            timings (None: it reports neither).
        secure: secure aggregation's client half (None: updates are submitted as
            encoded); its steps go over ``link``, which must have ``secagg_step``.
        now: the monotonic clock a task's deadline is measured on (tests inject one).
        stop_rule: when partial work stops (default :class:`StopRule`).
        residuals: the store ``pipeline`` and ``new_pipeline`` keep error-feedback
            residuals in: kept across center terms of one run, the round run again
            rolled back (:mod:`~fedstrata.runtime.client_terms`; None: every new run id
            rebuilds the pipeline).
    """

    def __init__(
        self,
        link: CenterLink,
        client_id: int,
        trainer: Trainer,
        data: LocalData,
        pipeline: Pipeline | None = None,
        *,
        backoff: Backoff | None = None,
        rng: np.random.Generator | None = None,
        sleep: Sleep = asyncio.sleep,
        new_pipeline: Callable[[], Pipeline | None] | None = None,
        downlink: DownlinkReplica | None = None,
        profile: DeviceReport | None = None,
        secure: SecureClient | None = None,
        now: Callable[[], float] = time.monotonic,
        stop_rule: StopRule | None = None,
        residuals: MemoryStateStore | None = None,
    ) -> None:
        self.link, self.client_id, self.trainer, self.data = link, client_id, trainer, data
        self.pipeline, self.backoff, self.sleep = pipeline, backoff, sleep
        self._new_pipeline = new_pipeline
        self.downlink, self.profile = downlink, profile
        self._run_id: str | None = None  # the run of the last task
        self._last_round = -1
        self.rng = rng if rng is not None else np.random.default_rng(client_id)
        self._dense = DenseCodec(trainer.spec.size)
        self._seen: list[int] = []  # rounds trained before the last reconnection
        self.secure = secure  # secure aggregation: updates leave masked (secagg_client.py)
        self.now, self.stop_rule = now, stop_rule or StopRule()
        self.local = LocalTraining(trainer, client_id, now)  # partial work (settle.py)
        self.eval_data: LocalData | None = None  # its held-out data (federated evaluation)
        self.terms = None if residuals is None else ResidualTerms(residuals)

    async def run(self) -> ClientReport:
        """Serve the center until it ends the run.

        A reconnection that finds the run over (its ``DONE`` was lost with the
        connection) ends the agent as ``DONE`` would.

        Raises:
            ProtocolError: the center refused the session (:class:`RunEndedError`:
                the run was over before this agent's first session).
            TransportError: the connection failed more than ``backoff.attempts`` times
                in a row (at once without a backoff).
        """
        report = ClientReport()
        failures = 0
        while True:
            try:
                return await self._session(report)
            except RunEndedError as exc:
                if not report.reconnects:
                    raise
                log.info("client %d: the run ended while reconnecting (%s)", self.client_id, exc)
                return report
            except TransportError as exc:
                if report.rounds != self._seen:  # progress since the last loss
                    failures, self._seen = 0, list(report.rounds)
                if self.backoff is None:
                    raise
                if failures >= self.backoff.attempts:
                    raise self._give_up(exc) from exc
                await self._reconnect(failures, exc, report)
                failures += 1

    async def _session(self, report: ClientReport) -> ClientReport:
        profile = self.profile
        tasks = self.link.session() if profile is None else self.link.session(profile=profile)
        try:
            async for task in tasks:
                if task.kind is TaskKind.DONE:
                    break
                if task.kind is TaskKind.EVALUATE:  # federated evaluation (fedeval_parts.py)
                    await answer_evaluation(self, task)
                elif self._admit(task, report):
                    await self._round(task, report)
        finally:
            aclose = getattr(tasks, "aclose", None)
            if aclose is not None:
                await aclose()
        return report

    def _give_up(self, exc: TransportError) -> TransportError:
        assert self.backoff is not None
        why = (
            f"client {self.client_id}: gave up after {self.backoff.attempts} reconnection "
            f"attempts: {exc}"
        )
        log.error("%s", why)
        return TransportError(why)

    def _admit(self, task: TaskSpec, report: ClientReport) -> bool:
        """Track the run and refuse a round that does not follow the last one."""
        if task.run_id != self._run_id:
            if self._run_id is not None:
                self._new_run(task)
            self._run_id, self._last_round = task.run_id, -1
        if task.round_idx <= self._last_round:
            why = (
                f"round {task.round_idx} does not follow round {self._last_round} "
                f"of run {task.run_id}"
            )
            log.warning("client %d: task refused: %s", self.client_id, why)
            report.refused.append((task.round_idx, why))
            return False
        self._last_round = task.round_idx
        return True

    def _new_run(self, task: TaskSpec) -> None:
        """A task of another run id: a new term of the same run keeps the residuals (the
        round in flight rolled back, client_terms.py); another run resets them."""
        kept = self.terms is not None and self.terms.switch(self._run_id, task)
        log.warning("client %d: new %s %s (was %s); %s", self.client_id,
                    "term" if kept else "run", task.run_id, self._run_id,
                    "residuals kept" if kept else "per-run state reset")  # fmt: skip
        if not kept and self._new_pipeline is not None:
            self.pipeline = self._new_pipeline()
        if self.downlink is not None and not kept:  # a new term resumes its versions
            self.downlink.reset()

    async def _reconnect(self, attempt: int, exc: TransportError, report: ClientReport) -> None:
        assert self.backoff is not None
        delay = self.backoff.delay_s(attempt, self.rng)
        log.warning(
            "client %d: connection lost (%s); reconnecting in %.2f s (attempt %d of %d)",
            self.client_id,
            exc,
            delay,
            attempt + 1,
            self.backoff.attempts,
        )
        report.reconnects.append((delay, str(exc)))
        await self.sleep(delay)
        await self.link.reconnect()

    async def _round(self, task: TaskSpec, report: ClientReport) -> None:
        received = start = self.now()
        try:
            params = await self._model(task.round_idx)
        except (ProtocolError, PayloadError) as exc:
            log.warning("client %d: round %d skipped: %s", self.client_id, task.round_idx, exc)
            report.refused.append((task.round_idx, str(exc)))
            return
        down_s, start = self.now() - start, self.now()
        stop_at = None
        if task.partial is not None and task.deadline_s is not None:
            stop_at = self.stop_rule.stop_at(received, task.deadline_s, down_s)
        keys = (
            None
            if self.secure is None
            else asyncio.create_task(self.secure.prepare(task.round_idx))
        )
        try:
            rerun = (
                None
                if self.secure is None
                else self.secure.inputs.refusal(task.run_id, task.round_idx)
            )  # its input went to an earlier center term (secagg_failover.py)
            trained = (
                None if rerun else await asyncio.to_thread(self._train, task, params, stop_at)
            )
            if trained is None:  # a straggler: too little work by the deadline
                await self._straggle(task, report, keys, rerun)
                return
            payload, n, metrics, done = trained
            timings = self._timings(task, down_s, self.now() - start, done)
            if self.secure is not None and keys is not None:
                self.secure.inputs.record(task.run_id, task.round_idx)
                accepted, reason = await self.secure.submit(
                    await keys, task.round_idx, payload, n, metrics, timings=timings,
                    factor=done.factor,
                )  # fmt: skip
            elif timings is None:
                accepted, reason = await self.link.submit(task.round_idx, payload, n, metrics)
            else:
                accepted, reason = await self.link.submit(
                    task.round_idx, payload, n, metrics, timings
                )
        finally:
            if keys is not None:
                keys.cancel()
        report.rounds.append(task.round_idx)
        if not accepted:
            log.warning("client %d: round %d refused: %s", self.client_id, task.round_idx, reason)
            report.refused.append((task.round_idx, reason))

    async def _straggle(
        self,
        task: TaskSpec,
        report: ClientReport,
        keys: asyncio.Task[Prepared] | None,
        why: str | None = None,
    ) -> None:
        """Too little work by the deadline (or ``why`` not): send nothing (under secure
        aggregation, withdraw from the protocol so that no step waits for this client)."""
        why = why or f"partial work below the center's minimum in round {task.round_idx}: not sent"
        log.warning("client %d: %s", self.client_id, why)
        report.rounds.append(task.round_idx)
        report.refused.append((task.round_idx, why))
        if self.secure is not None and keys is not None:
            await keys
            await self.secure.withdraw(task.round_idx)

    def _timings(
        self, task: TaskSpec, down_s: float, compute_s: float, done: LocalOutcome
    ) -> RoundTimings | None:
        """The round as measured, for the center's scheduler (None: it schedules nothing);
        with partial work, the steps completed."""
        if self.profile is None or task.plan is None:
            return None
        if task.partial is None or done.assigned is None:
            return RoundTimings(down_s, compute_s, task.plan.num_samples(len(self.data)))
        per = min(task.plan.batch_size, max(len(self.data), 1))
        return RoundTimings(down_s, compute_s, done.steps * per, done.steps)

    async def _model(self, round_idx: int) -> FloatVector:
        """The model to train from: the dense broadcast, or the downlink replica."""
        size = self.trainer.spec.size
        if self.downlink is None:
            return decode_model(await self.link.download(round_idx), size)
        data = await self.link.download_downlink(round_idx, self.downlink.ask())
        return self.downlink.apply(data, size)

    def _train(
        self, task: TaskSpec, params: FloatVector, stop_at: float | None
    ) -> tuple[Payload, int, dict[str, float], LocalOutcome] | None:
        """Local training (stopped at ``stop_at`` under partial work) and encoding, in a
        worker thread; None: a straggler, nothing to send."""
        if task.plan is None:
            raise ProtocolError(f"round {task.round_idx}: the center sent no training plan")
        ctx = RoundContext(task.round_idx, task.root_seed).for_client(self.client_id)
        out = np.empty_like(params)
        done = self.local.run(
            params, self.data, task.plan, ctx, out, terms=task.partial, stop_at_s=stop_at
        )
        if done.dropped:
            return None
        codec_input = np.array(out, copy=True)
        if self.terms is not None:
            self.terms.before_encode(task.round_idx)
        if self.pipeline is not None:
            payload = self.pipeline.encode(codec_input, ctx)
        else:
            payload = self._dense.encode(codec_input, ctx)
        return payload, done.result.num_examples, dict(done.result.metrics), done
