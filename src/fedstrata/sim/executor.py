"""Run client training in this process or in a pool of persistent worker processes.

:class:`ProcessExecutor` starts its workers once per run. With ``fork`` (Linux's
default) it does so after the dataset and the trainer factory exist, so workers inherit
them instead of receiving pickles; with ``spawn`` (macOS, Windows, or asked for) each
worker gets the job pickled once and builds its own trainer. The global model lives in
one shared memory block (see :mod:`fedstrata.sim._workers`) that every worker reads;
each update is written into a *slot* of that block, and only small
tuples cross the pipes — one message per *chunk* of consecutive clients, so the
per-client cost of inter-process communication stays far below the cost of training
even a tiny model. The calling process trains too (it takes the next client whenever
it is waiting), so ``N`` cores are used with ``N - 1`` workers and nothing is
oversubscribed.

Results are handed to the consumer in task order, whoever trained them, so the
aggregation order — and thus every bit of the result — does not depend on the number
of workers. Memory is O(model x slots), with the slot count capped by a memory budget,
not O(clients).

Each training process, this one included, runs the intra-op thread count it is given
(:class:`~fedstrata.sim._workers.WorkerThreads`; ``sim.threads: auto`` divides the
cores between the processes for large models), so a model that would use every core
does not oversubscribe the machine once per worker; spawned children also get
``OMP_NUM_THREADS`` and friends before they load any math library.

Workers never outlive the run. Under ``fork`` the mapping has no name (nothing in
``/dev/shm``, no resource tracker), so it disappears with the last process that maps
it; under ``spawn`` the named block is unlinked at :meth:`ProcessExecutor.close`, or by
Python's resource tracker if this process dies first. Each worker
ignores SIGINT (Ctrl-C is the parent's to handle), asks Linux for SIGKILL when its
parent dies (``PR_SET_PDEATHSIG``), and holds no copy of any parent-side pipe end, so
even where that signal is unavailable a worker's next ``recv`` sees end-of-file once
the parent is gone, and it exits.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

import numpy as np

from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.core.training import Trainer
from fedstrata.errors import ConfigError, PayloadError
from fedstrata.sim._workers import (
    SharedBlock,
    StartMethod,
    WorkerThreads,
    _execute,
    _worker_main,
)
from fedstrata.sim.tasks import ClientJob, ClientTask, TaskResult

__all__ = ["Executor", "InProcessExecutor", "ProcessExecutor"]

log = logging.getLogger(__name__)
CHUNKS_IN_FLIGHT = 2  # per worker, so a worker never waits for its next chunk
MAX_CHUNK = 16
SLOT_BUDGET_BYTES = 256 << 20


class Executor(Protocol):
    """Trains clients and yields their results in task order."""

    @property
    def description(self) -> str:
        """Where clients train, for people (e.g. ``"3 worker processes + this one"``)."""
        ...

    def run(self, params: FloatVector, tasks: Sequence[ClientTask]) -> Iterator[TaskResult]: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Trains clients one after another in the calling process.

    Args:
        job: the trainer factory, client data and pipeline.
        size: number of model parameters.
        trainer: this process's trainer (default: built from ``job``).
        threads: intra-op threads for this process while the executor is open
            (restored at :meth:`close`); ``None`` leaves the framework alone.
    """

    def __init__(
        self,
        job: ClientJob,
        size: int,
        trainer: Trainer | None = None,
        *,
        threads: WorkerThreads | None = None,
    ) -> None:
        self.job = job
        self._trainer = trainer if trainer is not None else job.trainer_factory()
        self._out = np.zeros(size, dtype=np.float32)
        self._threads = threads
        self._previous = threads.apply(threads.count) if threads is not None else None

    @property
    def description(self) -> str:
        return "in-process"

    def run(self, params: FloatVector, tasks: Sequence[ClientTask]) -> Iterator[TaskResult]:
        for task in tasks:
            yield _execute(self._trainer, self.job, task, params, self._out)

    def close(self) -> None:
        """Give this process its previous thread count back."""
        if self._threads is not None and self._previous is not None:
            self._threads.apply(self._previous)
            self._previous = None


@dataclass
class _RoundQueue:
    """Bookkeeping of one ``run`` call."""

    todo: deque[ClientTask]
    free: deque[int]
    ready: dict[int, tuple[TaskResult, int]] = field(default_factory=dict)
    inflight: list[dict[int, tuple[int, int]]] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    chunk_size: int = 1


def _guided(remaining: int, largest: int, processes: int) -> int:
    """The next chunk's size: a share of the clients left (guided self-scheduling,
    Polychronopoulos and Kuck, IEEE Trans. Computers 1987), so the last chunks are
    single clients and no process waits long for another at the end of a round."""
    return max(1, min(largest, remaining // (CHUNKS_IN_FLIGHT * processes)))


class ProcessExecutor:
    """Persistent worker processes plus the calling process, sharing the model.

    Args:
        job: what every worker holds (trainer factory, client data, pipeline).
        size: number of model parameters.
        workers: number of worker processes (>= 1); the calling process trains too.
        local_trainer: the calling process's trainer (default: built on first use).
            Build and warm it up *before* creating the executor and the forked
            workers inherit a warmed-up framework instead of each paying for it.
        start_method: ``fork`` (workers inherit everything) or ``spawn`` (each worker
            unpickles the job and imports the framework itself); see
            :func:`~fedstrata.sim._workers.resolve_start_method`.
        threads: intra-op threads of every training process, this one included
            (restored here at :meth:`close`); ``None`` leaves the framework alone.
    """

    def __init__(
        self,
        job: ClientJob,
        size: int,
        workers: int,
        local_trainer: Trainer | None = None,
        *,
        start_method: StartMethod = "fork",
        threads: WorkerThreads | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"ProcessExecutor needs workers >= 1, got {workers}")
        self.job, self.size, self.workers = job, size, workers
        self.start_method: StartMethod = start_method
        self._slot_bytes = max(size * 4, 64)
        least = workers * CHUNKS_IN_FLIGHT + 2
        wanted = workers * CHUNKS_IN_FLIGHT * MAX_CHUNK + 4
        self._slots = max(least, min(wanted, SLOT_BUDGET_BYTES // self._slot_bytes))
        self._block = SharedBlock(size * 4 + self._slots * self._slot_bytes, start_method)
        self._buf = self._block.buf
        self._params = np.ndarray((size,), dtype=np.float32, buffer=self._buf)
        self._ctx: Any = mp.get_context(start_method)
        self._threads = threads
        # spawn: pickled once, unpickled by each worker after it has set its thread env
        self._pickled = pickle.dumps((job, threads)) if start_method == "spawn" else None
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(workers):
            self._spawn()
        self._trainer = local_trainer
        self._previous = threads.apply(threads.count) if threads is not None else None

    @property
    def description(self) -> str:
        plural = "es" if self.workers > 1 else ""
        how = "spawned" if self.start_method == "spawn" else "worker"
        return f"{self.workers} {how} process{plural} + this one"

    def _spawn(self, index: int | None = None) -> None:
        parent, child = self._ctx.Pipe()
        forked = self._pickled is None
        work = (self.job, self._threads) if self._pickled is None else self._pickled
        env = self._threads.env() if self._threads is not None and not forked else {}
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, self._block.handle(), work),
            kwargs={
                "sizes": (self.size, self._slot_bytes),
                "parent_pid": os.getpid(),
                "inherited": [*self._conns, parent] if forked else [],
                "env": env,
            },
            daemon=True,
        )
        proc.start()
        child.close()
        if index is None:
            self._conns.append(parent)
            self._procs.append(proc)
        else:
            self._conns[index], self._procs[index] = parent, proc

    def _slot_view(self, slot: int) -> FloatVector:
        offset = self.size * 4 + slot * self._slot_bytes
        return np.ndarray((self.size,), np.float32, self._buf, offset)

    def run(self, params: FloatVector, tasks: Sequence[ClientTask]) -> Iterator[TaskResult]:
        """Train ``tasks``; yields results in ``task.index`` order.

        A yielded ``vector`` lives in shared memory and is valid until the next one.
        """
        self._params[:] = params
        q = _RoundQueue(
            deque(tasks),
            deque(range(self._slots)),
            inflight=[{} for _ in range(self.workers)],
            chunks=[0] * self.workers,
            chunk_size=max(1, min(MAX_CHUNK, len(tasks) // (8 * (self.workers + 1)))),
        )
        for task in tasks:
            while task.index not in q.ready:
                self._step(q)
            result, slot = q.ready.pop(task.index)
            yield result
            q.free.append(slot)

    def _step(self, q: _RoundQueue) -> None:
        """Make progress: feed workers, take finished chunks, or train one here."""
        self._dispatch(q)
        if self._collect(q, timeout=0):
            return
        if q.todo and q.free:
            self._train_here(q)
        else:
            self._collect(q, timeout=None)

    def _train_here(self, q: _RoundQueue) -> None:
        if self._trainer is None:
            self._trainer = self.job.trainer_factory()
            if self._threads is not None:  # the factory may have set its own count
                self._threads.apply(self._threads.count)
        task, slot = q.todo.popleft(), q.free.popleft()
        res = _execute(self._trainer, self.job, task, self._params, self._slot_view(slot))
        q.ready[task.index] = (res, slot)

    def _dispatch(self, q: _RoundQueue) -> None:
        for worker in range(self.workers):
            if q.chunks[worker] >= CHUNKS_IN_FLIGHT or not q.todo or not q.free:
                continue
            chunk: list[tuple[ClientTask, int]] = []
            size = _guided(len(q.todo), q.chunk_size, self.workers + 1)
            while q.todo and q.free and len(chunk) < size:
                task, slot = q.todo.popleft(), q.free.popleft()
                q.inflight[worker][task.index] = (slot, task.client_id)
                chunk.append((task, slot))
            q.chunks[worker] += 1
            try:
                self._conns[worker].send(chunk)
            except OSError:  # the worker is gone: fail what it holds, start a new one
                self._worker_died(worker, q)

    def _collect(self, q: _RoundQueue, timeout: float | None) -> bool:
        got = False
        for ready_conn in wait(self._conns, timeout):
            worker = next(i for i, c in enumerate(self._conns) if c is ready_conn)
            try:
                replies: list[tuple[Any, ...]] = self._conns[worker].recv()
            except (EOFError, OSError):
                self._worker_died(worker, q)
                continue
            q.chunks[worker] -= 1
            for msg in replies:
                q.inflight[worker].pop(msg[0])
                q.ready[msg[0]] = (self._result(msg), msg[2])
            got = True
        return got

    def _result(self, msg: tuple[Any, ...]) -> TaskResult:
        index, client_id, slot, nbytes, blob, n, steps, metrics, error, wall = msg
        offset = self.size * 4 + slot * self._slot_bytes
        vector = payload = None
        if error is None:
            try:
                if blob is not None:
                    payload = Payload.from_bytes(blob)
                elif nbytes >= 0:
                    payload = Payload.from_bytes(self._buf[offset : offset + nbytes])
                elif nbytes == -1:
                    vector = self._slot_view(slot)
            except PayloadError as exc:
                error = f"PayloadError: {exc}"
        return TaskResult(index, client_id, n, steps, metrics, vector, payload, error, wall)

    def _worker_died(self, worker: int, q: _RoundQueue) -> None:
        log.warning(
            "worker %d died; restarting it and failing its %d clients in flight",
            worker,
            len(q.inflight[worker]),
        )
        for index, (slot, client_id) in q.inflight[worker].items():
            q.ready[index] = (TaskResult(index, client_id, error="worker process died"), slot)
        q.inflight[worker].clear()
        q.chunks[worker] = 0
        self._procs[worker].join(timeout=1)
        self._spawn(worker)

    def close(self) -> None:
        """Stop the workers, release the shared memory, restore this process's threads."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        deadline = time.monotonic() + 5.0  # for all of them: they finish their chunks
        for proc in self._procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
        del self._params
        self._block.close()
        if self._threads is not None and self._previous is not None:
            self._threads.apply(self._previous)
            self._previous = None

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
