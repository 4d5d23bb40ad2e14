"""What the simulator asks a worker to do for one client, and what comes back."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.core.training import LocalData, LocalPlan, Trainer, TrainerFactory
from fedstrata.pipeline.stage import Pipeline

__all__ = ["ClientJob", "ClientSource", "ClientTask", "TaskResult", "run_client"]


class ClientSource(Protocol):
    """Anything that hands out a client's local data by id."""

    def client(self, client_id: int) -> LocalData: ...


@dataclass(frozen=True)
class ClientTask:
    """Train client ``client_id`` in round ``round_idx``; ``index`` orders results."""

    index: int
    client_id: int
    round_idx: int
    plan: LocalPlan


@dataclass(frozen=True, eq=False)
class ClientJob:
    """What every worker holds for the whole run (inherited once, never per client)."""

    trainer_factory: TrainerFactory
    data: ClientSource
    root_seed: int
    pipeline: Pipeline | None = None  # None: send the dense float32 delta as it is


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
        ``(payload or None for the dense path, num_examples, num_steps, metrics)``.
    """
    data = job.data.client(task.client_id)
    ctx = RoundContext(task.round_idx, job.root_seed).for_client(task.client_id)
    result = trainer.train(params, data, task.plan, ctx, out)
    metrics = dict(result.metrics)
    payload = None
    if job.pipeline is not None:
        start = time.perf_counter()
        payload = job.pipeline.encode(np.array(out, copy=True), ctx)
        metrics["encode_s"] = time.perf_counter() - start
    return payload, result.num_examples, result.num_steps, metrics
