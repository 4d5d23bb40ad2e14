"""What every simulator driver does with a client's result and a closed round.

Written once and used by the flat :class:`~fedstrata.sim.Simulation`, the tree
driver (:mod:`fedstrata.sim.hierarchy`) and FedBuff (:mod:`fedstrata.sim.async_engine`,
whose "round" is a server step): why a result cannot be used, the weighting rule,
folding a result (dense vector or encoded payload) into an aggregator's state or
decoding it for a dense fold target (FedBuff's buffer), the bytes and seconds of a
client's legs, the server halves applied to a round's aggregate (round hooks, then the
pipeline's decode in reverse), the round's central evaluation, the codec figures of the
round's metrics and the events sent to the sinks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from fedstrata.aggregation.protocol import Aggregator
from fedstrata.algorithms.server import ServerOptimizer
from fedstrata.coordinator.cadence import Evaluation, evaluate_round
from fedstrata.coordinator.events import RoundOutcome
from fedstrata.core.context import RoundContext, derive_rng
from fedstrata.core.metrics import AnyStats, CodecStats
from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.payload import HEADER_SIZE, Payload
from fedstrata.core.training import LocalPlan
from fedstrata.core.update import validate_vector
from fedstrata.errors import FedstrataError, PrivacyBudgetExhausted, SecAggError
from fedstrata.monitoring import ClientFailure, RoundMetrics, Sink
from fedstrata.pipeline.stage import Pipeline
from fedstrata.sim.hooks import Broadcaster, ClientPlanner, ClientReport, RoundHook
from fedstrata.sim.profiles import ProfileTable
from fedstrata.sim.tasks import TaskResult

__all__ = [
    "Evaluation",
    "apply_server_halves",
    "client_legs",
    "client_weight",
    "codec_stats",
    "decode_result",
    "dense_bytes",
    "dropped_out",
    "emit_events",
    "emit_round",
    "evaluate_round",
    "finish_round",
    "fold_result",
    "result_problem",
    "round_mean",
    "server_step",
    "start_hooks",
    "upload_bytes",
]

log = logging.getLogger(__name__)


def dense_bytes(size: int) -> int:
    """Bytes of a dense float32 update or model of ``size`` entries on the wire."""
    return HEADER_SIZE + 4 * size


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


def client_weight(res: TaskResult, weighting: Literal["examples", "uniform"]) -> float:
    """The weighting rule: examples trained, or 1 (uniform; what DP needs)."""
    return float(res.num_examples) if weighting == "examples" else 1.0


def upload_bytes(res: TaskResult, size: int) -> int:
    """Bytes of ``res``'s upload: its payload, or the dense vector."""
    return res.payload.nbytes if res.payload is not None else dense_bytes(size)


def fold_result(
    aggregator: Aggregator[Any],
    state: object,
    res: TaskResult,
    weight: float,
    pipeline: Pipeline | None,
) -> tuple[object, float]:
    """Fold one usable result into ``state``; returns the state and decode seconds.

    Raises:
        FedstrataError: a malformed payload (the state is left unchanged).
    """
    cid, metrics = res.client_id, res.metrics
    if res.vector is not None:
        state = aggregator.accumulate(state, res.vector, weight, client_id=cid, metrics=metrics)
        return state, 0.0
    payload, pipe = _encoded(res, pipeline)
    start = time.perf_counter()
    state = aggregator.accumulate_payload(
        state, pipe.codec, payload, weight, client_id=cid, metrics=metrics
    )
    return state, time.perf_counter() - start


def decode_result(res: TaskResult, pipeline: Pipeline | None) -> tuple[FloatVector, float]:
    """The dense update of one usable result (its vector, or its payload decoded) and
    the decode seconds: :func:`fold_result` for a fold target that takes dense vectors
    (FedBuff's staleness-weighted buffer).

    Raises:
        FedstrataError: a malformed payload, or a payload without a pipeline.
    """
    if res.vector is not None:
        return res.vector, 0.0
    payload, pipe = _encoded(res, pipeline)
    start = time.perf_counter()
    vector = pipe.codec.decode(payload)
    return vector, time.perf_counter() - start


def _encoded(res: TaskResult, pipeline: Pipeline | None) -> tuple[Payload, Pipeline]:
    """``res``'s payload and the pipeline that decodes it."""
    if pipeline is None or res.payload is None:
        raise FedstrataError(f"client {res.client_id} sent a payload but the run has no pipeline")
    return res.payload, pipeline


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


def start_hooks(hooks: Sequence[RoundHook], round_idx: int) -> str | None:
    """Start ``round_idx`` in every hook; the reason to stop the run, or None."""
    try:
        for hook in hooks:
            hook.start(round_idx)
    except PrivacyBudgetExhausted as exc:
        return str(exc)
    return None


def apply_server_halves(
    mean: FloatVector,
    accepted: int,
    ctx: RoundContext,
    hooks: Sequence[RoundHook],
    pipeline: Pipeline | None,
) -> FloatVector:
    """The round's aggregate after the hooks (central DP noise) and the pipeline's
    server halves in reverse: what the server optimizer steps with."""
    for hook in hooks:
        mean = hook.aggregate(mean, accepted, ctx)
    if pipeline is not None:
        mean = pipeline.decode_aggregate(mean, ctx)
    return mean


def round_mean(
    outcome: RoundOutcome, size: int, finalize: Callable[[], FloatVector]
) -> FloatVector:
    """The round's aggregate (``finalize()``); zeros when nothing was accepted (a hook
    that applies every round, central DP, still noises it: an unchanged model would
    reveal a small cohort)."""
    if not outcome.applied:
        log.info(
            "round %d: applying the noised aggregate of %d updates although below "
            "min_clients (central DP applies every round)",
            outcome.round_idx,
            len(outcome.accepted),
        )
    if not outcome.accepted:
        return np.zeros(size, dtype=np.float32)
    return finalize()


def server_step(
    outcome: RoundOutcome,
    params: FloatVector,
    opt_state: object,
    finalize: Callable[[], FloatVector],
    *,
    hooks: Sequence[RoundHook],
    pipeline: Pipeline | None,
    optimizer: ServerOptimizer[Any],
    broadcast: Broadcaster,
    root_seed: int,
) -> tuple[FloatVector, object]:
    """Apply a closed round: its mean, the server halves, the optimizer step, the
    broadcast's new version; the model and optimizer state after it.

    A round below ``min_clients`` is applied only when a hook applies every round
    (central DP). A round whose secure sum cannot be recovered (too few survivors for
    the protocol's threshold) leaves the model unchanged and the run goes on: the
    protocol refused it before revealing any share (its record says so)."""
    if not (outcome.applied or any(hook.applies_every_round for hook in hooks)):
        return params, opt_state
    ctx = RoundContext(outcome.round_idx, root_seed)
    try:
        mean = round_mean(outcome, params.shape[0], finalize)
    except SecAggError as exc:
        log.warning("round %d: aggregate lost, model unchanged: %s", outcome.round_idx, exc)
        return params, opt_state  # the secure-aggregation record says it was lost
    mean = apply_server_halves(mean, len(outcome.accepted), ctx, hooks, pipeline)
    params, opt_state = optimizer.step(params, mean, opt_state)
    broadcast.publish(params, ctx)
    return params, opt_state


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


def emit_round(
    outcome: RoundOutcome,
    metrics: RoundMetrics,
    sinks: Sequence[Sink],
    on_round: Callable[[RoundMetrics], None] | None,
) -> None:
    """Send the round's client failures and metrics to the sinks and the callback."""
    emit_events(outcome.round_idx, outcome.failed, metrics, sinks, on_round)


def emit_events(
    round_idx: int,
    failed: Sequence[tuple[int, str]],
    metrics: RoundMetrics,
    sinks: Sequence[Sink],
    on_round: Callable[[RoundMetrics], None] | None,
) -> None:
    """Send ``(client, reason)`` failures, then ``metrics``, to the sinks; then the
    metrics to the callback (a synchronous round, or a FedBuff server step)."""
    for cid, reason in failed:
        failure = ClientFailure(round_idx, cid, reason)
        for sink in sinks:
            sink.emit(failure)
    for sink in sinks:
        sink.emit(metrics)
    if on_round is not None:
        on_round(metrics)


def codec_stats(
    *,
    uploads: int,
    size: int,
    bytes_up: int,
    bytes_down: int,
    receivers: int,
    decode_s: float,
    client_means: Mapping[str, float],
) -> CodecStats:
    """Codec figures of a round: uplink ratio against dense, bytes per client, and the
    clients' mean encoding seconds when they report it (``encode_s``)."""
    done = max(uploads, 1)
    dense = done * dense_bytes(size)
    return CodecStats(
        uplink_ratio=dense / bytes_up if bytes_up else 1.0,
        uplink_bytes_per_client=bytes_up / done,
        downlink_bytes_per_client=bytes_down / max(receivers, 1),
        server_decode_s=decode_s,
        client_encode_s=client_means.get("encode_s"),
    )
