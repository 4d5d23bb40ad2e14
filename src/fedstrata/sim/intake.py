"""What the simulator's drivers, and only they, do with a client's result and a round.

The rules every driver shares, the gRPC runtime included (the weighting rule, folding
or decoding an update, the server step, codec figures, emitted events), are
:mod:`fedstrata.coordinator.round_logic`; the evaluation cadence is
:mod:`fedstrata.coordinator.cadence`. This module holds what is the simulator's own,
used by the flat :class:`~fedstrata.sim.Simulation`, the tree driver
(:mod:`fedstrata.sim.hierarchy`) and FedBuff (:mod:`fedstrata.sim.async_engine`): why
an executor's :class:`~fedstrata.sim.tasks.TaskResult` cannot be used (a client
error, a dense vector of the wrong shape or with NaN/Inf, a seeded dropout), a
result's fold and decode through the shared rules, the bytes and seconds of a client's
simulated legs, and the planner's and hooks' records of a finished round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedstrata.aggregation.protocol import Aggregator
from fedstrata.coordinator.events import RoundOutcome
from fedstrata.coordinator.hooks import RoundHook
from fedstrata.coordinator.round_logic import decode_update, dense_bytes, fold_update
from fedstrata.coordinator.system_tally import SystemTally
from fedstrata.core.context import derive_rng
from fedstrata.core.metrics import AnyStats
from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.payload import Payload
from fedstrata.core.training import LocalPlan
from fedstrata.core.update import validate_vector
from fedstrata.errors import FedstrataError
from fedstrata.monitoring import RoundMetrics
from fedstrata.pipeline.stage import Pipeline
from fedstrata.sim.hooks import ClientPlanner, ClientReport
from fedstrata.sim.profiles import ProfileTable
from fedstrata.sim.tasks import TaskResult

__all__ = [
    "client_legs",
    "decode_result",
    "dropped_out",
    "finish_round",
    "fold_result",
    "result_problem",
    "system_tally",
    "upload_bytes",
]


def system_tally(
    profiles: ProfileTable, start_s: float, cohort: Sequence[int], size: int
) -> SystemTally:
    """A round's device and link tally: the cohort, with each device's peak FLOP/s at
    the run's precision (its profile's FLOP/s x its speed factor)."""
    ids = np.asarray(cohort, dtype=np.int64)
    peaks = (profiles.flops[ids] * profiles.speedup[ids]).tolist()
    devices = tuple(int(c) for c in cohort)
    return SystemTally(start_s, devices, dense_bytes(size), dict(zip(devices, peaks, strict=True)))


def result_problem(res: TaskResult, spec: ParamSpec) -> str | None:
    """Why a result cannot be used (client error, NaN/Inf, wrong shape), or None."""
    if res.error is not None:
        return res.error
    if res.payload is None:
        try:
            validate_vector(res.client_id, res.vector, spec)
        except FedstrataError as exc:
            return str(exc)
    return None


def dropped_out(rate: float, root_seed: int, round_idx: int, client_id: int) -> str | None:
    """Why client ``client_id`` drops out of round ``round_idx`` after it was sent the
    model (``devices.dropout_rate``: a seeded draw per client and round), or None."""
    if rate <= 0:
        return None
    if derive_rng(root_seed, round_idx, client_id, "dropout").random() >= rate:
        return None
    return f"dropped out during the round (devices.dropout_rate {rate:g})"


def upload_bytes(res: TaskResult, size: int) -> int:
    """Bytes of ``res``'s upload: its payload, or the dense vector."""
    return res.payload.nbytes if res.payload is not None else dense_bytes(size)


def _update(res: TaskResult) -> FloatVector | Payload:
    """A usable result's update: its dense vector (fast path) or its payload."""
    if res.vector is not None:
        return res.vector
    if res.payload is None:
        raise FedstrataError(f"client {res.client_id} returned neither a vector nor a payload")
    return res.payload


def fold_result(
    aggregator: Aggregator[Any],
    state: object,
    res: TaskResult,
    weight: float,
    pipeline: Pipeline | None,
) -> tuple[object, float]:
    """Fold one usable result into ``state`` (:func:`round_logic.fold_update
    <fedstrata.coordinator.round_logic.fold_update>`); returns the state and decode
    seconds.

    Raises:
        FedstrataError: a malformed payload (the state is left unchanged).
    """
    codec = None if pipeline is None else pipeline.codec
    return fold_update(
        aggregator, state, _update(res), weight, codec, client_id=res.client_id,
        metrics=res.metrics,
    )  # fmt: skip


def decode_result(res: TaskResult, pipeline: Pipeline | None) -> tuple[FloatVector, float]:
    """The dense update of one usable result and the decode seconds
    (:func:`round_logic.decode_update <fedstrata.coordinator.round_logic.decode_update>`).

    Raises:
        FedstrataError: a malformed payload, or a payload without a pipeline.
    """
    codec = None if pipeline is None else pipeline.codec
    return decode_update(_update(res), codec, client_id=res.client_id)


def client_legs(
    profiles: ProfileTable,
    client_sizes: np.ndarray,
    flops_per_example: float,
    *,
    cid: int,
    plan: LocalPlan,
    down_bytes: int,
    up_bytes: int,
) -> tuple[float, float, float]:
    """Simulated (downlink, compute, uplink) seconds of client ``cid`` on its own links."""
    examples = plan.num_samples(int(client_sizes[cid]))
    return profiles.client_legs_s(cid, examples, flops_per_example, down_bytes, up_bytes)


def finish_round(
    metrics: RoundMetrics,
    outcome: RoundOutcome,
    *,
    hooks: Sequence[RoundHook],
    planner: ClientPlanner | None,
    reports: Sequence[ClientReport],
) -> RoundMetrics:
    """``metrics`` with the planner's and the hooks' typed records (after the server step).

    Raises:
        DataError: two hooks returned records of one family.
    """
    records: list[AnyStats | None] = []
    if planner is not None:
        records.append(planner.observe(outcome.round_idx, reports, metrics.sim_round_s))
    for hook in hooks:
        records.append(hook.finish(outcome.round_idx, len(outcome.accepted), metrics.loss))
    return metrics.with_stats(*records)
