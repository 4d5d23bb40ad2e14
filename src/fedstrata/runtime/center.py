"""The center's round driver for the deployment runtime (no gRPC in this module).

:class:`Center` owns one run: the :class:`~fedstrata.coordinator.RoundCoordinator`
(which decides who is selected and which updates count), the aggregator's running
state, the server optimizer and the client sessions. Transports call three entry
points with already-authenticated client ids: :meth:`Center.session` (a client's
lifetime; yields its tasks), :meth:`Center.download` (the model of the open round) and
:meth:`Center.submit` (an update, as a stream of chunks). ``wire.py`` serves them over
gRPC; tests may call them directly (the in-memory side of the transport seam).

Ownership and cancellation: :meth:`Center.run` is one task that runs every round and
returns the final model; cancelling it cancels the round in flight. Before a round it
waits (:class:`~fedstrata.runtime.liveness.Roster`): the first round for every expected
participant at most ``start_timeout_s``, every round for the quorum of reachable
clients (``min_available``), logging whom it waits for. Sessions end when
the run ends (a ``DONE`` task) or when the client goes away, which fails the client in
the open round. A round ends when every selected client is resolved (accepted,
rejected or failed) or when its deadline scope expires.

Determinism: accepted updates are folded in cohort order through a reorder buffer
(:class:`~fedstrata.runtime.intake.RoundIntake`, one per open round; an update waits
only until every earlier cohort member is resolved), and the round is applied by the
simulator's server step (:func:`fedstrata.coordinator.round_logic.server_step`), so the
model is bit-identical to the simulator's for the same seed and configuration,
whatever the arrival order.

Tiers: a participant may be an aggregator (``aggregator.py``) that serves its own
clients with a :class:`Center` of its own (:meth:`Center.collect`) and submits their
weighted-mean partial (:func:`encode_partial`) instead of an update; the center merges
partials (``aggregator.merge``) in cohort order like updates. A tier reports the clients
it reaches, so the quorum counts clients, not tiers.

Run identity: the center names its run (``run_id``, random unless given); tasks carry
it, and a download or upload of another run is refused. An upload is bound to its run
and round end to end: one that completes after its round closed is refused as late.
A tier adopts the run id its parent relays (a new one resets its round numbering).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedstrata.aggregation.mean import WeightedMean
from fedstrata.aggregation.protocol import Aggregator
from fedstrata.algorithms.server import FedAvg, ServerOptimizer
from fedstrata.coordinator import (
    RoundCoordinator,
    SendModel,
    StartRound,
)
from fedstrata.coordinator.round_logic import server_step
from fedstrata.core.clock import Clock, MonotonicClock
from fedstrata.core.params import FloatVector
from fedstrata.pipeline.dense import DenseCodec
from fedstrata.pipeline.stage import Codec, Pipeline
from fedstrata.runtime.center_io import receive_upload, serve_download, serve_session
from fedstrata.runtime.downlink import DownlinkAsk, DownlinkServer
from fedstrata.runtime.dp_center import DpCenter
from fedstrata.runtime.intake import RoundIntake
from fedstrata.runtime.liveness import Roster
from fedstrata.runtime.records import (
    CenterSettings,
    OpenRound,
    RoundRecord,
    RuntimeResult,
    TaskKind,
    TaskSpec,
    UploadHeader,
    decode_partial,
    dense_update_limit,
    encode_partial,
)
from fedstrata.runtime.round_steps import await_cohort, close_round, dispatch
from fedstrata.runtime.sched_reports import DeviceReport
from fedstrata.runtime.secagg_rounds import SecureRounds
from fedstrata.runtime.streaming import Broadcast, apply_in_place
from fedstrata.runtime.tier_combos import NodeClaims, TierClients

if TYPE_CHECKING:
    from fedstrata.runtime.failover import AckGate, AfterRound
    from fedstrata.runtime.fedeval import EvalDesk
    from fedstrata.runtime.scheduling import CenterScheduler
    from fedstrata.runtime.tier_sched import EdgeFollower
    from fedstrata.runtime.tier_work import TreeRole

__all__ = [
    "Center",
    "CenterSettings",
    "RoundRecord",
    "RuntimeResult",
    "TaskKind",
    "TaskSpec",
    "UploadHeader",
    "decode_partial",
    "dense_update_limit",
    "encode_partial",
]

log = logging.getLogger(__name__)


class Center:
    """Drives rounds for the clients connected to it; see the module docstring.

    Args:
        settings: rounds, plan, chunking, deadlines.
        coordinator: the round state machine.
        aggregator: folds accepted updates.
        server_optimizer: applies the aggregate.
        codec: decodes client payloads (the pipeline's codec, or the dense codec).
        pipeline: server halves of the update stages (None: none).
        clock: time source for the coordinator's events.
        run_id: this run's name on the wire (default: random).
        downlink: downlink compression (None: every client downloads the dense model).
        scheduler: sizes each client's work to the deadline and learns from its
            timings (None: every client runs ``settings.plan``).
    """

    def __init__(
        self,
        settings: CenterSettings,
        *,
        coordinator: RoundCoordinator,
        aggregator: Aggregator[Any],
        server_optimizer: ServerOptimizer[Any],
        codec: Codec,
        pipeline: Pipeline | None = None,
        clock: Clock | None = None,
        run_id: str | None = None,
        downlink: DownlinkServer | None = None,
        scheduler: CenterScheduler | EdgeFollower | None = None,
    ) -> None:
        self.settings, self.coordinator, self.aggregator = settings, coordinator, aggregator
        self.server_optimizer, self.codec, self.pipeline = server_optimizer, codec, pipeline
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.run_id = run_id or secrets.token_hex(8)
        self.roster = Roster()
        self._sessions: dict[int, asyncio.Queue[TaskSpec]] = {}
        self._rounds_started = 0
        self._start_awaited = False
        self._intake: RoundIntake | None = None  # the open round
        self._finished = False
        self.rejections: list[tuple[int, int, str]] = []
        # failover hooks (runtime/failover.py): a committed round's checkpoint, and the
        # gate that holds an accepted update's reply until its round is committed
        self.after_round: AfterRound | None = None
        self.ack_gate: AckGate | None = None
        self.downlink, self.scheduler = downlink, scheduler
        self.secure: SecureRounds | None = None  # secure aggregation (secagg_rounds.py)
        self.dp: DpCenter | None = None  # DP hooks and budget (dp_center.py)
        self.tiers: TierClients | None = None  # aggregator tiers' clients (tier_combos.py)
        self.claims = NodeClaims()  # which live tier serves each node of the tree
        self.tree_sched: TreeRole | None = None  # schedules a tree (tier_sched.py)
        self.wait_grace_s = 0.0  # a tree's center waits past the deadline for partials
        self.evaluation: EvalDesk | None = None  # federated evaluation (fedeval.py)

    # ---- the run -------------------------------------------------------------------

    async def run(
        self,
        params: FloatVector,
        on_round: Callable[[int, RoundRecord, FloatVector], None] | None = None,
        *,
        start_round: int = 0,
        opt_state: object | None = None,
    ) -> RuntimeResult:
        """Run every round from ``params``; returns the final model and records.

        ``on_round(round_idx, record, params)`` is called after each round with the
        model it produced (the run directory is written from it). A resumed run starts
        at ``start_round`` with the server optimizer's ``opt_state`` (None: fresh).
        """
        result = RuntimeResult(params=params, rejections=self.rejections)
        if self.evaluation is not None:
            result.fed_evals = self.evaluation.history
        if opt_state is None:
            opt_state = self.server_optimizer.init(params)
        if self.downlink is not None:
            self.downlink.start(params)
        log.info("run %s: rounds %d..%d", self.run_id, start_round, self.settings.rounds - 1)
        try:
            for round_idx in range(start_round, self.settings.rounds):
                if self.dp is not None and self.dp.start(round_idx) is not None:
                    result.stopped_reason = self.dp.stopped
                    break
                params, opt_state, record = await self._run_round(round_idx, params, opt_state)
                if self.dp is not None:
                    accepted = (record.clients or record.outcome).accepted
                    spent = self.dp.finish(round_idx, len(accepted), params=params)
                    record = dataclasses.replace(record, privacy=spent)
                if self.evaluation is not None:
                    record = await self.evaluation.after_round(round_idx, params, record)
                result.rounds.append(record)
                if on_round is not None:
                    on_round(round_idx, record, params)
                if self.after_round is not None:
                    await self.after_round(round_idx, record, params, opt_state)
        finally:
            self.finish()
        result.params = params
        return result

    async def wait_for_clients(self, count: int) -> None:
        """Return once ``count`` clients hold a session (cancel to give up)."""
        await self.roster.wait(lambda: len(self._sessions) >= count, None)

    @property
    def finished(self) -> bool:
        """The run is over: every session was sent ``DONE``."""
        return self._finished

    @property
    def connected(self) -> int:
        """Participants holding a session now."""
        return len(self._sessions)

    async def await_start(self) -> None:
        """The wait before a round: for every expected participant at most the start
        timeout (before the first round only), then for the quorum (no limit)."""
        await self._gather(self._rounds_started, None)

    async def _gather(self, round_idx: int, limit_s: float | None) -> bool:
        s = self.settings
        first = 0 if self._start_awaited else (s.start_clients or 0)
        self._start_awaited = True
        return await self.roster.gather(
            round_idx,
            expected=first,
            quorum=s.min_available,
            timeout_s=s.start_timeout_s,
            limit_s=limit_s,
        )

    async def _run_round(
        self, round_idx: int, params: FloatVector, opt_state: object
    ) -> tuple[FloatVector, object, RoundRecord]:
        state, record = await self.collect(round_idx, params)
        if self.tiers is not None:  # the round over the tiers' clients (tier_combos.py)
            record = self.tiers.close(record)
        if record.voided is not None:
            return params, opt_state, record
        outcome = record.outcome if record.clients is None else record.clients
        opt = self.server_optimizer
        if outcome.applied and self._streamed(params) and isinstance(opt, FedAvg):
            return apply_in_place(params, state, opt), opt_state, record  # FedAvg's step
        rnd = None if self.secure is None else self.secure.current
        finalize = self.aggregator.finalize if rnd is None else rnd.finalize
        params, opt_state = server_step(
            outcome, params, opt_state, functools.partial(finalize, state),
            hooks=() if self.dp is None else self.dp.hooks, pipeline=self.pipeline,
            optimizer=self.server_optimizer, broadcast=self.downlink,
            root_seed=self.settings.root_seed,
        )  # fmt: skip
        return params, opt_state, record

    def _streamed(self, params: FloatVector) -> bool:
        """Whether rounds on ``params`` aggregate streaming (see CenterSettings)."""
        limit = self.settings.stream_min_bytes
        return (
            limit is not None
            and 4 * params.shape[0] >= limit
            and isinstance(self.aggregator, WeightedMean)
            and isinstance(self.codec, DenseCodec)
            and self.pipeline is None
            and self.downlink is None
        )

    async def collect(
        self,
        round_idx: int,
        params: FloatVector,
        *,
        model: bytes | None = None,
        task: TaskSpec | None = None,
        limit_s: float | None = None,
        members: Collection[int] | None = None,
    ) -> tuple[Any, RoundRecord]:
        """Run round ``round_idx`` on the connected clients without applying it.

        An aggregator tier calls this with the model and task its parent sent; the
        center's own rounds call it too. Returns the aggregator's state (every accepted
        update folded in cohort order) and the round's record.

        Args:
            round_idx: the round (clients derive their randomness from it).
            params: the model of the round.
            model: its broadcast payload bytes as received (None: encoded here).
            task: the task to relay to clients (None: from the settings); a new run id
                in it starts a new run here.
            limit_s: give up waiting for the quorum after this long and run the round
                with whoever is live (None: wait on).
            members: only these clients may be selected (a tier's share of its
                parent's cohort, :mod:`~fedstrata.runtime.tier_periods`; None: all).
        """
        if task is not None and task.run_id and task.run_id != self.run_id:
            self._adopt_run(task.run_id)
        await self._gather(round_idx, limit_s)
        self._rounds_started += 1
        live = self._sessions.keys() if members is None else self._sessions.keys() & set(members)
        available = np.array(sorted(live), dtype=np.int64)
        if self.scheduler is not None:
            available = self.scheduler.admit(round_idx, available, self.clock.now())
        (send,) = self.coordinator.handle(StartRound(round_idx, self.clock.now(), available))
        assert isinstance(send, SendModel)
        blob = Broadcast.of_model(params) if model is None else Broadcast.of_bytes(model)
        cohort = [int(c) for c in send.client_ids]
        streamed = self._streamed(params)
        agg = _STREAM_MEAN if streamed else self.aggregator
        size = params.shape[0]
        rnd = OpenRound(round_idx, cohort, agg.init(size), blob, self.run_id, streamed, size)
        intake = RoundIntake(
            rnd,
            settings=self.settings,
            coordinator=self.coordinator,
            aggregator=agg,
            codec=self.codec,
            clock=self.clock,
            reject=self._reject,
            settle=None if self.scheduler is None else self.scheduler.settle,
        )
        self._intake = intake
        t = self.tree_sched
        work = None if t is None else t.start(round_idx, self.clock.now(), self.settings.plan)
        s, sched = self.settings, self.scheduler
        dispatch(intake, self._sessions, s, scheduler=sched, tree_sched=t, relayed=task, work=work)
        if self.secure is not None:
            self.secure.open(intake, self.scheduler)  # before any await: no step precedes it
        await await_cohort(rnd, s.round_timeout_s, self.wait_grace_s)
        record = close_round(intake, self.clock, self.scheduler, self.tree_sched)
        self._intake = None
        if self.secure is not None:
            await self.secure.unmask()
        if rnd.void is not None:  # an empty partial: a tier's parent fails this tier
            return _STREAM_MEAN.init(0), record
        return rnd.state, record

    def _adopt_run(self, run_id: str) -> None:
        """A tier's parent started a new run: number rounds afresh under its id."""
        level = logging.WARNING if self._rounds_started else logging.INFO
        log.log(level, "run %s replaces run %s; rounds start afresh", run_id, self.run_id)
        self.run_id, self._rounds_started = run_id, 0
        self._start_awaited = True  # a running tier: its clients are already here
        self.coordinator = RoundCoordinator(self.coordinator.policy, self.coordinator.selector)

    def finish(self) -> None:
        """End the run: every session gets ``DONE``; later sessions are refused."""
        self._finished = True
        for queue in self._sessions.values():
            queue.put_nowait(TaskSpec(TaskKind.DONE))

    def _reject(self, round_idx: int, cid: int, reason: str) -> str:
        log.warning("round %d: rejected client %d: %s", round_idx, cid, reason)
        self.rejections.append((round_idx, cid, reason))
        return reason

    # ---- transport entry points (client ids already authenticated) -------------------

    def session(
        self,
        client_id: int,
        *,
        run_id: str = "",
        live_clients: int = 0,
        profile: DeviceReport | None = None,
        node: str = "",
        profiles: Mapping[int, DeviceReport] | None = None,
    ) -> AsyncIterator[TaskSpec]:
        """A client's session: yields its tasks until ``DONE``; ends fail it
        (:func:`~fedstrata.runtime.center_io.serve_session`)."""
        return serve_session(
            self, client_id, run_id=run_id, live_clients=live_clients, profile=profile,
            node=node, profiles=profiles,
        )  # fmt: skip

    def _joined(self, client_id: int, profile: DeviceReport | None) -> None:
        """A client connected with its device ``profile``: tell the scheduler."""
        if self.scheduler is not None:
            self.scheduler.join(client_id, profile)

    def _left(self, client_id: int) -> None:
        """A client's session ended: fail it in the open round (and in its secure round)."""
        intake = self._intake
        if intake is not None and client_id in intake.rnd.members:
            intake.fail(client_id, "disconnected during the round")
        if self.secure is not None:
            self.secure.gone(client_id)
        if self.evaluation is not None:
            self.evaluation.gone(client_id)

    def push(self, client_id: int, task: TaskSpec) -> bool:
        """Queue ``task`` on ``client_id``'s session; False: it holds none."""
        queue = self._sessions.get(client_id)
        if queue is not None:
            queue.put_nowait(task)
        return queue is not None

    def download(
        self, client_id: int, round_idx: int, run_id: str = "", ask: DownlinkAsk | None = None
    ) -> tuple[int, AsyncIterator[bytes]]:
        """The open round's model for a selected client: (total bytes, chunks)
        (:func:`~fedstrata.runtime.center_io.serve_download`)."""
        return serve_download(self, client_id, round_idx, run_id, ask)

    async def submit(self, header: UploadHeader, chunks: AsyncIterator[bytes]) -> tuple[bool, str]:
        """Receive one update; returns (accepted, reason). Never raises for bad input
        (:func:`~fedstrata.runtime.center_io.receive_upload`)."""
        return await receive_upload(self, header, chunks)


_STREAM_MEAN = WeightedMean(sum_dtype="float32")
