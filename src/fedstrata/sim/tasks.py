"""What the simulator asks a worker to do for one client, and what comes back.

A task trains a client, or (``ClientTask.evaluate``) evaluates the global model on
the client's own held-out data (``ClientJob.eval_data``): federated evaluation runs
in the same workers as training.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedstrata.coordinator.fedeval import client_evaluation
from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.core.state import ClientStateStore
from fedstrata.core.training import (
    ClientStateful,
    LocalData,
    LocalPlan,
    Trainer,
    TrainerFactory,
)
from fedstrata.errors import DataError
from fedstrata.pipeline.stage import Pipeline

__all__ = [
    "ClientJob",
    "ClientSource",
    "ClientTask",
    "TaskResult",
    "evaluate_client",
    "run_client",
]


class ClientSource(Protocol):
    """Anything that hands out a client's local data by id."""

    def client(self, client_id: int) -> LocalData: ...


@dataclass(frozen=True)
class ClientTask:
    """Train client ``client_id`` in round ``round_idx``; ``index`` orders results.

    With ``evaluate``, evaluate the global model on the client's held-out data
    instead (``plan`` is unused): the result has no vector, and its metrics are the
    task's evaluation metrics.
    """

    index: int
    client_id: int
    round_idx: int
    plan: LocalPlan
    evaluate: bool = False


@dataclass(frozen=True, eq=False)
class ClientJob:
    """What every worker holds for the whole run (inherited once, never per client)."""

    trainer_factory: TrainerFactory
    data: ClientSource
    root_seed: int
    pipeline: Pipeline | None = None  # None: send the dense float32 delta as it is
    eval_data: ClientSource | None = None  # each client's held-out data (federated eval)
    client_state: ClientStateStore | None = None  # per-client model state (FedBN buffers)


@dataclass(frozen=True, eq=False)
class TaskResult:
    """The outcome of one :class:`ClientTask`.

    ``vector`` (dense fast path) or ``payload`` is set on success; ``error`` on
    failure. ``vector`` may be a view into shared memory that is only valid until the
    consumer asks for the next result.
    """

    index: int
    client_id: int
    num_examples: int = 0
    num_steps: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    vector: FloatVector | None = None
    payload: Payload | None = None
    error: str | None = None
    wall_s: float = 0.0


def run_client(
    trainer: Trainer, job: ClientJob, task: ClientTask, params: FloatVector, out: FloatVector
) -> tuple[Payload | None, int, int, dict[str, float]]:
    """Train one client into ``out`` and encode it with the job's pipeline.

    Returns:
        ``(payload or None for the dense path, num_examples, num_steps, metrics)``;
        for an evaluation task ``(None, examples evaluated, 0, metrics)``.
    """
    if task.evaluate:
        return evaluate_client(trainer, job, task, params)
    data = job.data.client(task.client_id)
    ctx = RoundContext(task.round_idx, job.root_seed).for_client(task.client_id)
    with _client_turn(trainer, job, task.client_id, save=True):
        result = trainer.train(params, data, task.plan, ctx, out)
    metrics = dict(result.metrics)
    payload = None
    if job.pipeline is not None:
        start = time.perf_counter()
        payload = job.pipeline.encode(np.array(out, copy=True), ctx)
        metrics["encode_s"] = time.perf_counter() - start
    return payload, result.num_examples, result.num_steps, metrics


def evaluate_client(
    trainer: Trainer, job: ClientJob, task: ClientTask, params: FloatVector
) -> tuple[None, int, int, dict[str, float]]:
    """Evaluate ``params`` on client ``task.client_id``'s held-out data.

    The metrics are the task's named metrics (its ``evaluate``), else ``loss`` and
    ``accuracy``.

    Raises:
        DataError: the job has no evaluation data, or the client's is empty.
    """
    if job.eval_data is None:
        raise DataError("this run has no per-client evaluation data (evaluation.every: 0)")
    data = job.eval_data.client(task.client_id)
    with _client_turn(trainer, job, task.client_id, save=False):
        num_examples, metrics = client_evaluation(trainer, params, data)
    return None, num_examples, 0, metrics


@contextmanager
def _client_turn(
    trainer: Trainer, job: ClientJob, client_id: int, *, save: bool
) -> Iterator[None]:
    """Around one client's turn: its own per-client state (FedBN), saved if ``save``.

    Without a store or per-client state (every built-in model) this does nothing.
    Afterwards the state is back at its initial values, so a client never sees
    another's and central evaluation sees the factory's.
    """
    store = job.client_state
    state = None
    if store is not None and isinstance(trainer, ClientStateful):
        state = trainer.client_state
    if store is None or state is None:
        yield
        return
    state.load(store, client_id)
    try:
        yield
        if save:
            state.save(store, client_id)
    finally:
        state.reset()
