"""Train clients on persistent Ray actors, on this machine or on a Ray cluster.

:class:`RayExecutor` is the :class:`~fedstrata.sim.executor.Executor` for many hosts.
The :class:`~fedstrata.sim.tasks.ClientJob` (trainer factory, client data, pipeline)
goes into Ray's object store once (``ray.put``) and every actor builds its trainer
from it once; the model goes into the object store once per round and each actor
copies it once per round. Clients are sent in chunks of consecutive tasks, a bounded
number per actor in flight, and results (a dense float32 delta or the encoded
:class:`~fedstrata.core.payload.Payload` bytes) are yielded in task order, so a run is
bit-identical to :class:`~fedstrata.sim.executor.InProcessExecutor` with the same seed.

Ray is optional: it is imported only inside this module's functions. Use
:func:`open_ray_executor` to get local worker processes (with a WARNING) when Ray is
not installed or cannot start.

Ownership: the executor owns its actors, and the Ray connection only when it opened
it (a caller's ``ray.init`` is reused and left open). :meth:`RayExecutor.close` kills
the actors; a ``run`` generator abandoned mid-round leaves its chunks to finish and be
dropped.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.core.training import Trainer
from fedstrata.errors import ConfigError, MissingDependencyError, PayloadError, TransportError
from fedstrata.sim._workers import StartMethod, WorkerThreads, _execute
from fedstrata.sim.executor import (
    CHUNKS_IN_FLIGHT,
    MAX_CHUNK,
    Executor,
    InProcessExecutor,
    ProcessExecutor,
)
from fedstrata.sim.tasks import ClientJob, ClientTask, TaskResult

__all__ = ["RayExecutor", "open_ray_executor", "ray_available"]

log = logging.getLogger(__name__)
WINDOW_CHUNKS = 4  # per actor: how far ahead of the consumer tasks are dispatched
Reply = tuple[int, int, int, int, dict[str, float], Any, bytes | None, str | None, float]


def ray_available() -> bool:
    """Whether the ``ray`` package can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class _ClientActor:
    """One Ray actor: holds the job and a trainer, trains chunks of clients."""

    def __init__(self, job: ClientJob, size: int) -> None:
        self.job = job
        self.trainer = job.trainer_factory()
        self.params = np.zeros(size, dtype=np.float32)
        self.out = np.zeros(size, dtype=np.float32)

    def set_params(self, params: FloatVector) -> None:
        """Copy this round's model (a read-only object-store view) into our buffer."""
        self.params[:] = params

    def train(self, chunk: list[ClientTask]) -> list[Reply]:
        """Train ``chunk`` in order; dense deltas are copied, payloads serialized."""
        return [_reply(_execute(self.trainer, self.job, t, self.params, self.out)) for t in chunk]

    def ping(self) -> int:
        """Answer once constructed (the executor waits for every actor to start)."""
        return os.getpid()


def _reply(res: TaskResult) -> Reply:
    vector = None if res.vector is None else np.array(res.vector, dtype=np.float32, copy=True)
    blob = None if res.payload is None else res.payload.to_bytes()
    metrics = dict(res.metrics)
    return (res.index, res.client_id, res.num_examples, res.num_steps, metrics, vector, blob,
            res.error, res.wall_s)  # fmt: skip


def _result(reply: Reply) -> TaskResult:
    index, client_id, n, steps, metrics, vector, blob, error, wall = reply
    payload = None
    if error is None and blob is not None:
        try:
            payload = Payload.from_bytes(blob)
        except PayloadError as exc:
            error = f"PayloadError: {exc}"
    return TaskResult(index, client_id, n, steps, metrics, vector, payload, error, wall)


@dataclass
class _Round:
    """Bookkeeping of one ``run`` call: positions, not task indices, order the work."""

    todo: deque[tuple[int, ClientTask]]
    chunk_size: int
    window: int
    ready: dict[int, TaskResult] = field(default_factory=dict)
    pending: dict[Any, tuple[int, Any, list[tuple[int, ClientTask]]]] = field(default_factory=dict)
    per_actor: list[int] = field(default_factory=list)
    yielded: int = 0


class RayExecutor:
    """Persistent Ray actors, each holding the job; results in task order.

    Args:
        job: what every actor holds (trainer factory, client data, pipeline); it must
            pickle (cloudpickle), as it goes into the object store once.
        size: number of model parameters.
        num_actors: actors to start (default: one per CPU of the Ray cluster).
        address: Ray cluster to connect to (``"auto"``, ``"ray://host:10001"``,
            ``"host:6379"``); None starts a private local Ray instance. Ignored when
            Ray is already initialised in this process.
        num_cpus: CPUs of the local instance when ``address`` is None (default: all).

    Raises:
        ConfigError: ``num_actors`` or ``size`` is not positive.
        MissingDependencyError: Ray is not installed (``pip install 'fedstrata[ray]'``).
        TransportError: Ray cannot start, or its actors fail to start.
    """

    def __init__(
        self,
        job: ClientJob,
        size: int,
        *,
        num_actors: int | None = None,
        address: str | None = None,
        num_cpus: int | None = None,
    ) -> None:
        if size < 1:
            raise ConfigError(f"RayExecutor size must be >= 1, got {size}")
        if num_actors is not None and num_actors < 1:
            raise ConfigError(f"RayExecutor num_actors must be >= 1, got {num_actors}")
        self.job, self.size = job, size
        self._ray = _import_ray()
        self._owns_ray = _connect(self._ray, address, num_cpus)
        try:
            self._start_actors(num_actors)
        except Exception as exc:
            self.close()
            raise TransportError(f"Ray actors failed to start: {exc}") from exc

    def _start_actors(self, num_actors: int | None) -> None:
        ray = self._ray
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self.num_actors = num_actors or max(1, int(cpus))
        self._actor_cls = ray.remote(num_cpus=min(1.0, cpus / self.num_actors))(_ClientActor)
        self._job_ref = ray.put(self.job)  # once: actors (and restarts) share it
        self._actors = [self._new_actor() for _ in range(self.num_actors)]
        ray.get([a.ping.remote() for a in self._actors])
        log.info("Ray executor: %d actors on %.0f CPUs", self.num_actors, cpus)

    @property
    def description(self) -> str:
        return f"{self.num_actors} Ray actor{'s' if self.num_actors != 1 else ''}"

    def _new_actor(self) -> Any:
        return self._actor_cls.remote(self._job_ref, self.size)

    def run(self, params: FloatVector, tasks: Sequence[ClientTask]) -> Iterator[TaskResult]:
        """Train ``tasks`` on the actors; yields results in the order of ``tasks``.

        A yielded ``vector`` is a read-only array owned by the result.
        """
        params_ref = self._ray.put(np.ascontiguousarray(params, dtype=np.float32))
        for actor in self._actors:
            actor.set_params.remote(params_ref)  # actor calls run in submission order
        per_chunk = max(1, min(MAX_CHUNK, len(tasks) // (8 * self.num_actors)))
        q = _Round(
            deque(enumerate(tasks)),
            chunk_size=per_chunk,
            window=WINDOW_CHUNKS * self.num_actors * per_chunk,
            per_actor=[0] * self.num_actors,
        )
        self._params_ref = params_ref  # restarted actors need this round's model
        for pos in range(len(tasks)):
            while pos not in q.ready:
                self._dispatch(q)
                self._collect(q)
            q.yielded = pos + 1
            yield q.ready.pop(pos)

    def _dispatch(self, q: _Round) -> None:
        for i, actor in enumerate(self._actors):
            while q.per_actor[i] < CHUNKS_IN_FLIGHT and q.todo:
                if q.todo[0][0] >= q.yielded + q.window:
                    return
                chunk = [q.todo.popleft() for _ in range(min(q.chunk_size, len(q.todo)))]
                ref = actor.train.remote([task for _, task in chunk])
                q.pending[ref] = (i, actor, chunk)
                q.per_actor[i] += 1

    def _collect(self, q: _Round) -> None:
        """Wait for one finished chunk and file its results."""
        done, _ = self._ray.wait(list(q.pending), num_returns=1)
        for ref in done:
            i, actor, chunk = q.pending.pop(ref)
            q.per_actor[i] -= 1
            try:
                replies: list[Reply] = self._ray.get(ref)
            except self._ray.exceptions.RayError as exc:  # actor died, object lost, ...
                self._chunk_failed(i, actor, chunk, q, exc)
                continue
            for (pos, _), reply in zip(chunk, replies, strict=True):
                q.ready[pos] = _result(reply)

    def _chunk_failed(
        self, i: int, actor: Any, chunk: list[tuple[int, ClientTask]], q: _Round, exc: Exception
    ) -> None:
        """Fail the chunk's clients; replace a dead actor unless that was done already."""
        died = isinstance(exc, self._ray.exceptions.RayActorError)
        why = "Ray actor died" if died else f"Ray task failed: {type(exc).__name__}"
        log.warning("Ray actor %d: %s; failing its %d clients", i, why, len(chunk))
        for pos, task in chunk:
            q.ready[pos] = TaskResult(task.index, task.client_id, error=why)
        if died and self._actors[i] is actor:
            log.warning("restarting Ray actor %d", i)
            self._actors[i] = self._new_actor()
            self._actors[i].set_params.remote(self._params_ref)

    def close(self) -> None:
        """Kill the actors; shut Ray down if this executor started it."""
        for actor in getattr(self, "_actors", []):
            try:
                self._ray.kill(actor)
            except Exception:  # already gone
                log.debug("Ray actor already gone", exc_info=True)
        self._actors = []
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(
            "ray", "fedstrata[ray]", "the Ray backend (sim.backend: ray)"
        ) from exc
    return ray


def _connect(ray: Any, address: str | None, num_cpus: int | None) -> bool:
    """Initialise Ray unless it already is; returns whether we did.

    Raises:
        TransportError: Ray cannot start or the cluster cannot be reached.
    """
    if ray.is_initialized():
        return False
    start = time.perf_counter()
    try:
        if address is None:  # local actors import what this process can (a user's task)
            path = os.pathsep.join(p for p in sys.path if p)
            ray.init(
                address="local", num_cpus=num_cpus, include_dashboard=False,
                configure_logging=False, log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
            )  # fmt: skip
        else:
            ray.init(address=address, configure_logging=False, log_to_driver=False)
    except Exception as exc:
        raise TransportError(f"Ray cannot start (address={address!r}): {exc}") from exc
    log.info("Ray started (address=%r) in %.1f s", address, time.perf_counter() - start)
    return True


def open_ray_executor(
    job: ClientJob,
    size: int,
    *,
    address: str | None = None,
    num_actors: int | None = None,
    fallback_workers: int = 0,
    local_trainer: Trainer | None = None,
    start_method: StartMethod = "fork",
    threads: WorkerThreads | None = None,
) -> Executor:
    """A :class:`RayExecutor`, or local workers if Ray is missing or cannot start.

    Args:
        job: what every actor or worker holds.
        size: number of model parameters.
        address: Ray cluster address; None starts a local Ray instance.
        num_actors: actors to start (default: one per Ray CPU).
        fallback_workers: forked workers of the fallback :class:`ProcessExecutor`
            (0: train in this process with :class:`InProcessExecutor`).
        local_trainer: the calling process's trainer for the fallback.
        start_method: how the fallback's workers start (``fork`` or ``spawn``).
        threads: intra-op threads of each fallback training process (Ray sets its
            actors' threads itself, one per CPU it gives them).

    Raises:
        ConfigError: ``num_actors`` or ``fallback_workers`` is invalid.
    """
    if fallback_workers < 0:
        raise ConfigError(f"fallback_workers must be >= 0, got {fallback_workers}")
    try:
        return RayExecutor(job, size, num_actors=num_actors, address=address)
    except (TransportError, MissingDependencyError) as exc:
        log.warning("Ray backend unavailable, training in local processes instead: %s", exc)
    if fallback_workers == 0:
        return InProcessExecutor(job, size, local_trainer, threads=threads)
    return ProcessExecutor(
        job, size, fallback_workers, local_trainer, start_method=start_method, threads=threads
    )
