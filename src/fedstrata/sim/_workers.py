"""How worker processes start, share memory and divide the cores between them.

* :func:`resolve_start_method` turns ``sim.start_method`` (``auto``, ``fork``,
  ``spawn``) into the method to use: ``auto`` is ``fork`` on Linux (workers inherit the
  dataset and the warmed-up framework) and ``spawn`` elsewhere, as CPython itself
  chooses (on macOS ``fork`` is unsafe once system frameworks are loaded; Windows has
  only ``spawn``).
* :class:`SharedBlock` is the memory the model and the update slots live in: an
  anonymous mapping that forked children inherit, or, under ``spawn``, a named
  :class:`~multiprocessing.shared_memory.SharedMemory` block that children attach to
  by name and the parent unlinks when it closes (Python's resource tracker removes
  it should the parent die first).
* :class:`WorkerThreads` is the intra-op thread count of each training process and
  the framework call that applies it; :func:`threads_per_process` divides the cores,
  and :func:`auto_threads` does so only for models whose training step is large
  enough (``PARALLEL_STEP_FLOPS``) to repay the threads' synchronisation.
* ``_worker_main`` is a worker's life: set up, then train the chunks of clients the
  parent sends until it sends ``None`` or goes away.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import multiprocessing as mp
import os
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Literal

import numpy as np

from fedstrata.core.params import FloatVector
from fedstrata.core.training import Trainer
from fedstrata.errors import ConfigError
from fedstrata.sim._child import die_with_parent
from fedstrata.sim.tasks import ClientJob, ClientTask, TaskResult, run_client

__all__ = [
    "PARALLEL_STEP_FLOPS",
    "THREAD_ENV_VARS",
    "SharedBlock",
    "StartMethod",
    "WorkerThreads",
    "attach",
    "auto_threads",
    "resolve_start_method",
    "threads_per_process",
    "usable_cores",
]

log = logging.getLogger(__name__)
StartMethod = Literal["fork", "spawn"]
# Read by OpenMP, MKL and OpenBLAS when a spawned child first loads them.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Below this much work per training step (FLOPs per example x batch size) one thread is
# fastest: each parallel region costs microseconds of synchronisation, which a step of
# a few MFLOP cannot repay (measured on the built-in MLP and CNN, 0.5 to 20 MFLOP per
# step: a second thread was up to 40x slower on a busy 2-core machine, never faster).
PARALLEL_STEP_FLOPS = 1e8


def resolve_start_method(method: str) -> StartMethod:
    """The start method for ``method`` (``auto``, ``fork`` or ``spawn``) on this platform.

    Raises:
        ConfigError: an unknown method, or one this platform does not offer.
    """
    available = mp.get_all_start_methods()
    if method == "auto":
        return "fork" if sys.platform.startswith("linux") and "fork" in available else "spawn"
    if method not in ("fork", "spawn"):
        raise ConfigError(f"sim.start_method must be auto, fork or spawn, got {method!r}")
    if method not in available:
        raise ConfigError(f"sim.start_method {method!r} is not available on {sys.platform}")
    return "fork" if method == "fork" else "spawn"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def threads_per_process(workers: int, cores: int | None = None) -> int:
    """Intra-op threads per training process: the cores divided by the processes.

    The calling process trains too, so ``workers`` worker processes make
    ``workers + 1`` training processes; each gets at least one thread.
    """
    total = usable_cores() if cores is None else cores
    return max(1, total // (workers + 1))


def auto_threads(workers: int, step_flops: float, cores: int | None = None) -> int:
    """``sim.threads: auto``: one thread for small models, else the cores divided.

    Args:
        workers: worker processes (the calling process trains too).
        step_flops: work of one training step, FLOPs per example x batch size.
        cores: cores to divide (default: :func:`usable_cores`).
    """
    if step_flops < PARALLEL_STEP_FLOPS:
        return 1
    return threads_per_process(workers, cores)


@dataclass(frozen=True)
class WorkerThreads:
    """The intra-op thread count of each training process and how to set it.

    Attributes:
        count: threads per process (>= 1).
        apply: sets the training framework's thread count in the calling process and
            returns the previous one (e.g.
            :func:`fedstrata.torch_adapter.set_torch_threads`); a module-level
            function, so that it pickles by reference for spawned children.
    """

    count: int
    apply: Callable[[int], int]

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"sim.threads must be >= 1, got {self.count}")

    def env(self) -> dict[str, str]:
        """Environment for a spawned child, read before it loads any math library."""
        return dict.fromkeys(THREAD_ENV_VARS, str(self.count))


class SharedBlock:
    """``size_bytes`` of memory shared with worker processes started by ``method``."""

    def __init__(self, size_bytes: int, method: StartMethod) -> None:
        self.method = method
        self._shm: SharedMemory | None = None
        self._mem: mmap.mmap | None = None
        if method == "fork":
            self._mem = mmap.mmap(-1, size_bytes)  # shared, unnamed: children inherit it
            self.buf = memoryview(self._mem)
        else:
            self._shm = SharedMemory(create=True, size=size_bytes)
            self.buf = _buffer(self._shm)

    def handle(self) -> memoryview | str:
        """What a child needs to reach the block: the view (fork) or the name (spawn)."""
        return self.buf if self._shm is None else self._shm.name

    def close(self) -> None:
        """Unmap the block (and unlink its name); views still held keep their pages."""
        if self._shm is not None:
            with contextlib.suppress(FileNotFoundError):
                self._shm.unlink()
            with contextlib.suppress(BufferError):  # a caller still holds a result view
                self._shm.close()
        if self._mem is not None:
            with contextlib.suppress(BufferError):  # the mapping goes with the last view
                self.buf.release()
                self._mem.close()


def attach(handle: memoryview | str) -> tuple[memoryview, SharedMemory | None]:
    """In a child: the block's buffer, and the attachment to keep alive (spawn)."""
    if isinstance(handle, memoryview):
        return handle, None
    shm = SharedMemory(name=handle)
    return _buffer(shm), shm


def _buffer(shm: SharedMemory) -> memoryview:
    buf = shm.buf
    if buf is None:  # only after close()
        raise ConfigError(f"shared memory block {shm.name!r} is closed")
    return buf


def _execute(
    trainer: Any, job: ClientJob, task: ClientTask, params: FloatVector, out: FloatVector
) -> TaskResult:
    start = time.perf_counter()
    try:
        payload, n, steps, metrics = run_client(trainer, job, task, params, out)
    except Exception as exc:  # a client's failure must not end the round
        log.debug("client %d failed", task.client_id, exc_info=True)
        return TaskResult(task.index, task.client_id, error=f"{type(exc).__name__}: {exc}")
    wall = time.perf_counter() - start
    vector = out if payload is None and not task.evaluate else None
    return TaskResult(task.index, task.client_id, n, steps, metrics, vector, payload, None, wall)


Work = tuple[ClientJob, WorkerThreads | None]


def _worker_main(
    conn: Connection,
    handle: memoryview | str,
    work: Work | bytes,
    *,
    sizes: tuple[int, int],
    parent_pid: int,
    inherited: list[Connection],
    env: dict[str, str],
) -> None:
    """A worker's life: set up (forked: inherited; spawned: unpickled), then serve."""
    die_with_parent(parent_pid)
    for other in inherited:  # parent-side ends: without them, recv sees the parent's EOF
        other.close()
    os.environ.update(env)  # spawned: before the job's unpickling loads any math library
    job, threads = pickle.loads(work) if isinstance(work, bytes) else work
    buf, attachment = attach(handle)
    trainer = job.trainer_factory()
    if threads is not None:
        threads.apply(threads.count)
    _serve(conn, buf, job, trainer, sizes)
    if attachment is not None:  # the views into it died with _serve
        attachment.close()


def _serve(
    conn: Connection, buf: memoryview, job: ClientJob, trainer: Trainer, sizes: tuple[int, int]
) -> None:
    size, slot_bytes = sizes
    params = np.ndarray((size,), dtype=np.float32, buffer=buf)
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if chunk is None:
            return
        replies = []
        for task, slot in chunk:
            offset = size * 4 + slot * slot_bytes
            out = np.ndarray((size,), dtype=np.float32, buffer=buf, offset=offset)
            res = _execute(trainer, job, task, params, out)
            replies.append(_pack(res, slot, buf, offset, slot_bytes))
        conn.send(replies)


def _pack(
    res: TaskResult, slot: int, buf: memoryview, offset: int, slot_bytes: int
) -> tuple[Any, ...]:
    """A result as a small tuple; an encoded payload goes into the slot if it fits.

    ``nbytes``: the payload's length in the slot, -1 for a dense vector in the slot,
    -2 for no vector (an evaluation).
    """
    blob: bytes | None = None
    nbytes = -1 if res.vector is not None else -2
    if res.payload is not None:
        raw = res.payload.to_bytes()
        if len(raw) <= slot_bytes:
            buf[offset : offset + len(raw)] = raw
            nbytes = len(raw)
        else:
            blob = raw
    return (
        res.index,
        res.client_id,
        slot,
        nbytes,
        blob,
        res.num_examples,
        res.num_steps,
        dict(res.metrics),
        res.error,
        res.wall_s,
    )
