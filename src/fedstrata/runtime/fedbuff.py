"""FedBuff over the wire: buffered asynchronous aggregation at the runtime's center.

FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS 2022), driven exactly as the simulator drives it
(:mod:`fedstrata.sim.async_engine`): the round engine's buffered policy
(:mod:`fedstrata.coordinator.buffered`) dispatches clients, judges every update by its
staleness, closes a server step every ``K`` accepted updates and gives each freed slot
to a new client; the :class:`~fedstrata.scheduling.FedBuffServer` buffer folds the
accepted updates and makes the step; the server optimizer applies it. This module only
moves bytes and reads the real clock.

:class:`BufferedCenter` is a :class:`~fedstrata.runtime.center.Center` (served by the
same :class:`~fedstrata.runtime.wire.CenterServer`, same sessions, authentication and
limits) whose run is one buffered run instead of rounds:

* a dispatch of client ``c`` on model version ``v`` is task number ``seq`` (the
  dispatch sequence number: the simulator's ``ClientTask`` round, so a client trains
  with the same randomness) sent on ``c``'s session; the client downloads that
  version's model (kept while a client is in flight on it) and submits its update for
  task ``seq``;
* an upload is decoded (dense or compressed) and reported to the coordinator as
  ``UpdateArrived(c, now, weight, v)``; a malformed one, a client whose session ends
  while in flight, or one that cannot be sent the model is ``ClientFailed`` (its slot
  goes to another client);
* the run ends after ``server_updates`` server steps (``DONE`` to every session).

Downlink compression serves each download the encoder's message to the version the
task was dispatched on (:mod:`~fedstrata.runtime.fedbuff_downlink`); a device registry
receives the clients' measured profiles (:mod:`~fedstrata.runtime.fedbuff_registry`).

With ``concurrency = 1`` the order of events cannot differ from the simulator's, so the
model is bit-identical to it (tested); with more clients in flight, which updates are
stale depends on real arrival times. Ownership and cancellation as :class:`Center`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedstrata.aggregation.mean import WeightedMean
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
from fedstrata.coordinator.round_logic import client_weight, decode_update
from fedstrata.core.clock import Clock
from fedstrata.core.params import FloatVector
from fedstrata.core.update import check_update
from fedstrata.errors import ConfigError, FedstrataError, ProtocolError
from fedstrata.pipeline.stage import Codec
from fedstrata.runtime.center import Center
from fedstrata.runtime.downlink import DownlinkAsk, kind_mismatch
from fedstrata.runtime.fedbuff_downlink import VersionedDownlink
from fedstrata.runtime.fedbuff_registry import ProfileWriter
from fedstrata.runtime.records import CenterSettings, RuntimeResult, TaskKind, TaskSpec
from fedstrata.runtime.records import UploadHeader as Header
from fedstrata.runtime.sched_reports import DeviceReport
from fedstrata.runtime.streaming import Broadcast, paced
from fedstrata.runtime.transport import Reassembler, iter_chunks
from fedstrata.scheduling import FedBuffServer

__all__ = ["BufferedCenter", "BufferedStep"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BufferedStep:
    """One server step: the coordinator's outcome (accepted, failed, stale updates),
    the mean staleness of the applied updates and the payload bytes of the step."""

    outcome: RoundOutcome
    mean_staleness: float
    bytes_up: int
    bytes_down: int


@dataclass(frozen=True)
class _Flight:
    client_id: int
    version: int


class BufferedCenter(Center):
    """The center of a buffered asynchronous run; see the module docstring.

    Args:
        settings: plan, seed, chunking, start wait (``rounds`` is unused).
        buffering: concurrency and FedBuff's rules (those of ``server``).
        server: FedBuff's buffer.
        server_optimizer: applies each step as the delta.
        codec: decodes client payloads.
        server_updates: server steps to run.
        clock: time of the coordinator's events.
        run_id: this run's name on the wire (default: random).
        downlink: downlink compression per dispatched version (None: dense models).
        registry: where the clients' profiles are written (None: nowhere).
    """

    def __init__(
        self,
        settings: CenterSettings,
        *,
        buffering: Buffering,
        server: FedBuffServer,
        server_optimizer: ServerOptimizer[Any],
        codec: Codec,
        server_updates: int,
        clock: Clock | None = None,
        run_id: str | None = None,
        downlink: VersionedDownlink | None = None,
        registry: ProfileWriter | None = None,
    ) -> None:
        self.versioned, self.profile_writer = downlink, registry
        self._live = _LiveSelector(self)
        coordinator = RoundCoordinator(
            RoundPolicy(root_seed=settings.root_seed), selector=self._live, buffering=buffering
        )
        super().__init__(
            settings, coordinator=coordinator, aggregator=WeightedMean(),
            server_optimizer=server_optimizer, codec=codec, clock=clock, run_id=run_id,
        )  # fmt: skip
        self.server, self.server_updates = server, server_updates
        self.size = int(server.state.buffer.shape[0])
        self.steps: list[BufferedStep] = []
        self._flight: dict[int, _Flight] = {}  # task (dispatch) number -> who, on what
        self._models: dict[int, Broadcast] = {}  # versions someone is in flight on
        self._seq = 0
        self._taus: list[int] = []
        self._bytes = [0, 0]  # up, down: this step
        self._params: FloatVector | None = None
        self._opt_state: object = None
        self._over = asyncio.Event()

    async def run(
        self,
        params: FloatVector,
        on_round: Callable[[int, Any, FloatVector], None] | None = None,
        *,
        start_round: int = 0,
        opt_state: object | None = None,
    ) -> RuntimeResult:
        """Run ``server_updates`` server steps from ``params``; the final model.

        Buffered (FedBuff) runs do not resume from a checkpoint: ``start_round`` and
        ``opt_state`` must keep their defaults.

        Raises:
            ConfigError: fewer clients connected than the concurrency, or a resume
                (``start_round`` or ``opt_state`` given).
        """
        if start_round != 0 or opt_state is not None:
            raise ConfigError(
                "a buffered (FedBuff) deployment cannot resume from a checkpoint: its "
                "open dispatches are not part of the center's snapshot"
            )
        self._params, self._opt_state = params, self.server_optimizer.init(params)
        if self.versioned is not None:
            self.versioned.start(params)
        log.info("run %s: FedBuff, %d server steps", self.run_id, self.server_updates)
        try:
            await self.await_start()
            available = np.array(sorted(self._sessions), dtype=np.int64)
            now = self.clock.now()
            self._execute(self.coordinator.handle(StartRound(0, now, available)), None)
            await self._over.wait()
            if self.evaluation is not None:
                await self.evaluation.drain()
        finally:
            self.finish()
            if self.profile_writer is not None:
                self.profile_writer.close()
        evals = [] if self.evaluation is None else self.evaluation.history
        return RuntimeResult(params=self._params, rejections=self.rejections, fed_evals=evals)

    # ---- the coordinator's commands ------------------------------------------------

    def _execute(self, commands: list[Command], delta: FloatVector | None) -> None:
        for command in commands:
            if isinstance(command, SendModel):
                for cid in command.client_ids.tolist():
                    self._send(int(cid), command.round_idx)
            elif isinstance(command, Accept):
                if delta is None:
                    raise ProtocolError(f"accepted client {command.client_id} sent nothing")
                self.server.fold(
                    command.client_id, delta, command.weight, command.staleness, command.scale
                )
                self._taus.append(command.staleness)
            elif isinstance(command, CloseRound):
                self._step(command.outcome)

    def _send(self, cid: int, version: int) -> None:
        """Send client ``cid`` the model of ``version`` as task number ``seq``."""
        if self._over.is_set():  # the last step is made: nobody is sent a model
            return
        seq, self._seq = self._seq, self._seq + 1
        queue = self._sessions.get(cid)
        if queue is None:  # every idle client is gone: fail it once the loop turns
            self._flight[seq] = _Flight(cid, version)
            asyncio.get_running_loop().call_soon(self._fail, seq, "disconnected")
            return
        assert self._params is not None
        if version not in self._models:
            self._models[version] = Broadcast.of_model(self._params)
        if self.versioned is not None:
            self.versioned.pin(version)
        self._flight[seq] = _Flight(cid, version)
        nbytes = self._models[version].nbytes
        s = self.settings
        queue.put_nowait(TaskSpec(TaskKind.TRAIN, seq, s.root_seed, s.plan, None, nbytes,
                                  self.run_id))  # fmt: skip

    def _step(self, outcome: RoundOutcome) -> None:
        """Apply the buffer (the server step the coordinator closed)."""
        assert self._params is not None
        applied = self.server.flush(outcome.accepted[-1], self._taus[-1])
        self._params, self._opt_state = self.server_optimizer.step(
            self._params, applied.step, self._opt_state
        )
        up, down = self._bytes
        self.steps.append(BufferedStep(outcome, applied.mean_staleness, up, down))
        self._taus, self._bytes = [], [0, 0]
        if self.versioned is not None:  # as the simulator's broadcast: after the step
            self.versioned.publish(self._params, applied.new_version)
        live = {f.version for f in self._flight.values()}
        self._models = {v: m for v, m in self._models.items() if v in live}
        if self.versioned is not None:
            self.versioned.keep(live)
        if self.evaluation is not None:  # in the background, as the simulator's costs none
            self.evaluation.later(outcome.round_idx, self._params)
        if len(self.steps) >= self.server_updates:
            self._over.set()

    def _fail(self, seq: int, reason: str) -> None:
        flight = self._flight.pop(seq, None)
        if flight is not None and not self._over.is_set():
            log.info("task %d: client %d failed: %s", seq, flight.client_id, reason)
            self._execute(self.coordinator.handle(ClientFailed(flight.client_id, reason)), None)

    def _joined(self, client_id: int, profile: DeviceReport | None) -> None:
        if self.profile_writer is not None:  # the device registry (fedbuff_registry.py)
            self.profile_writer.join(client_id, profile)

    @property
    def connected_ids(self) -> list[int]:
        """Clients holding a session now."""
        return list(self._sessions)

    def _left(self, client_id: int) -> None:
        for seq, flight in list(self._flight.items()):
            if flight.client_id == client_id:
                self._fail(seq, "disconnected while in flight")
        if self.evaluation is not None:  # federated evaluation (fedeval.py)
            self.evaluation.gone(client_id)

    # ---- transport entry points ----------------------------------------------------

    def _task(self, client_id: int, seq: int, run_id: str) -> _Flight:
        flight = self._flight.get(seq)
        if run_id != self.run_id:
            why = f"run {run_id or '(none)'}; this is run {self.run_id}"
            raise ProtocolError(self._reject(seq, client_id, why))
        if flight is None or flight.client_id != client_id:
            raise ProtocolError(self._reject(seq, client_id, f"no task {seq} for it"))
        return flight

    def download(
        self, client_id: int, round_idx: int, run_id: str = "", ask: DownlinkAsk | None = None
    ) -> tuple[int, AsyncIterator[bytes]]:
        """The model of the version task ``round_idx`` was dispatched on; under
        downlink compression (``ask``) the message that brings the client to it.

        Raises:
            ProtocolError: another run, not the client's task, or the other kind of
                download than the run's.
        """
        flight = self._task(client_id, round_idx, run_id)
        versioned = self.versioned
        mismatch = kind_mismatch(ask, None if versioned is None else versioned.server)
        if mismatch is not None:
            self._fail(round_idx, mismatch)
            raise ProtocolError(self._reject(round_idx, client_id, mismatch))
        chunk_bytes = self.settings.chunks.chunk_bytes
        if versioned is not None and ask is not None:
            data = versioned.message(flight.version, ask)
            self._bytes[1] += len(data)
            return len(data), paced(iter_chunks(data, chunk_bytes))
        model = self._models[flight.version]
        self._bytes[1] += model.nbytes
        return model.nbytes, paced(model.chunks(chunk_bytes))

    async def submit(self, header: Header, chunks: AsyncIterator[bytes]) -> tuple[bool, str]:
        """Receive one update of a task in flight; returns (accepted, reason)."""
        cid, seq = header.client_id, header.round_idx
        try:
            flight = self._task(cid, seq, header.run_id)
            if header.partial:
                raise ProtocolError(self._reject(seq, cid, "no tiers under FedBuff"))
        except ProtocolError as exc:
            return False, str(exc)
        try:
            reassembler = Reassembler(header.total_bytes, self.settings.chunks.max_total_bytes)
            async for chunk in chunks:
                reassembler.add(chunk)
            payload = reassembler.payload()
            delta, _ = decode_update(payload, self.codec, client_id=cid)
            delta = check_update(cid, delta, self.size)
        except FedstrataError as exc:
            self._fail(seq, f"bad upload: {exc}")
            return False, self._reject(seq, cid, str(exc))
        except BaseException:
            self._fail(seq, "upload interrupted")
            raise
        return self._arrived(seq, flight, header, delta, payload.nbytes)

    def _arrived(
        self, seq: int, flight: _Flight, header: Header, delta: FloatVector, nbytes: int
    ) -> tuple[bool, str]:
        if self._flight.pop(seq, None) is None or self._over.is_set():
            return False, self._reject(seq, flight.client_id, "the task was resolved meanwhile")
        self._bytes[0] += nbytes
        weight = client_weight(header.num_examples, self.settings.weighting)
        event = UpdateArrived(flight.client_id, self.clock.now(), weight, flight.version)
        commands = self.coordinator.handle(event)
        self._execute(commands, delta)
        if any(isinstance(c, Accept) for c in commands):
            return True, ""
        reason = next((getattr(c, "reason", "") for c in commands), "rejected")
        return False, self._reject(seq, flight.client_id, str(reason))


class _LiveSelector:
    """Who takes a freed slot: the buffered policy's uniform draw over the idle
    clients, among those still connected (the same draw as the simulator's while every
    client is)."""

    def __init__(self, center: BufferedCenter) -> None:
        self.center = center

    def select(
        self, round_idx: int, available: NDArray[np.int64], k: int, rng: np.random.Generator
    ) -> NDArray[np.int64]:
        live = available[np.isin(available, list(self.center.connected_ids))]
        pool = live if live.size else available
        return pool[rng.integers(pool.size, size=k)] if k == 1 else rng.choice(pool, k, False)
