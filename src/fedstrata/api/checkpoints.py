"""Checkpointing a simulation every round (Issue 15 part 2).

:class:`RoundCheckpoints` is the drivers' ``on_state`` callback. On the round's
critical path it only gathers references: the model and the server optimizer's
state (which the server step never mutates), small component states, and the
clients' state files (re-read only where the round rewrote them,
:class:`~fedstrata.core.state_files.StateDirSnapshot`). One background thread turns
the newest of those into an :class:`~fedstrata.checkpoint.snapshot.EngineSnapshot`
blob and hands it to the checkpointer's tiers (memory, then disk / object storage in
the checkpointer's own thread); a newer round supersedes one not yet serialized.

Each snapshot also records the run's wall time so far (``EngineSnapshot.wall_s``):
the wall time the run had when this segment started (:meth:`RoundCheckpoints.start`,
the resumed snapshot's figure) plus the time since, so a resumed run's summary reports
the total over its segments.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fedstrata.checkpoint.snapshot import EngineSnapshot
from fedstrata.config import FedConfig, dump_config
from fedstrata.core.state_files import StateDirSnapshot
from fedstrata.errors import CheckpointError
from fedstrata.sim.checkpointing import EngineParts

__all__ = ["BlobSink", "RoundCheckpoints", "config_digest", "driver_of"]

log = logging.getLogger(__name__)


class BlobSink(Protocol):
    """What :class:`RoundCheckpoints` writes to (``fedstrata.checkpoint.Checkpointer``)."""

    def snapshot(self, round_num: int, blob: bytes) -> None: ...

    def flush(self) -> None: ...


def config_digest(config: FedConfig) -> str:
    """sha256 of the resolved configuration (a resume must run the same one)."""
    return hashlib.sha256(dump_config(config).encode("utf-8")).hexdigest()


def driver_of(config: FedConfig) -> str:
    """The driver a config runs: ``flat``, ``tree`` or ``async`` (FedBuff)."""
    if config.topology.mode != "flat":
        return "tree"
    return "async" if config.scheduling.async_.enabled else "flat"


@dataclass
class _Pending:
    rounds_done: int
    parts: EngineParts
    wall_s: float


class RoundCheckpoints:
    """A driver's ``on_state``: snapshot each round, persist in the background.

    Args:
        sink: the checkpointer (its tiers and their cadence).
        client_state: the clients' state directory (captured into each snapshot).
        driver: ``flat`` or ``tree``.
        digest: :func:`config_digest` of the run's configuration.
    """

    def __init__(self, sink: BlobSink, client_state: Path, driver: str, digest: str) -> None:
        self.sink, self.driver, self.digest = sink, driver, digest
        self._files = StateDirSnapshot(client_state)
        self._cond = threading.Condition()
        self._pending: _Pending | None = None
        self._busy = False
        self._error: BaseException | None = None
        self._closed = False
        self.saved_rounds: list[int] = []
        self.critical_s: list[float] = []  # per snapshot: time on the round's path
        self.writer_cpu_s: list[float] = []  # per written snapshot: writer thread CPU
        self.prior_wall_s = 0.0  # the run's wall time before this segment
        self._segment_start = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="fedstrata-ckpt", daemon=True)
        self._thread.start()

    def start(self, prior_wall_s: float = 0.0) -> None:
        """The driver starts now; the run had ``prior_wall_s`` of wall time before (a
        resumed snapshot's ``wall_s``; 0 for a fresh run)."""
        self.prior_wall_s, self._segment_start = prior_wall_s, time.perf_counter()

    def __call__(self, rounds_done: int, parts: EngineParts) -> None:
        """Take the round's snapshot (critical path: references and changed files).

        Raises:
            CheckpointError: the background writer failed on an earlier round.
        """
        t0 = time.perf_counter()
        self._raise_failure()
        parts = {**parts, "client_state": self._files.capture()}
        wall_s = self.prior_wall_s + (t0 - self._segment_start)
        with self._cond:
            self._pending = _Pending(rounds_done, parts, wall_s)
            self._cond.notify_all()
        self.critical_s.append(time.perf_counter() - t0)

    def flush(self) -> None:
        """Wait until the newest snapshot is written to every tier that takes it.

        Raises:
            CheckpointError: a snapshot could not be written.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._pending is None and not self._busy)
        self._raise_failure()
        self.sink.flush()

    def close(self) -> None:
        """Flush, then stop the background thread (idempotent)."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise CheckpointError(f"writing a checkpoint failed: {self._error}") from self._error

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                job, self._pending = self._pending, None
                if job is None:
                    return
                self._busy = True
            try:
                self._write(job)
            except BaseException as exc:  # reported on the driver's next round
                log.error("checkpoint of round %d failed: %s", job.rounds_done - 1, exc)
                self._error = exc
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, job: _Pending) -> None:
        cpu0 = time.thread_time()
        snap = EngineSnapshot(job.rounds_done, self.driver, self.digest, job.parts, job.wall_s)
        self.sink.snapshot(job.rounds_done, snap.to_bytes())
        self.saved_rounds.append(job.rounds_done)
        self.writer_cpu_s.append(time.thread_time() - cpu0)
