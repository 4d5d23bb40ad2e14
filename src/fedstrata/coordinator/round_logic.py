"""What every driver does with a client's update and a closed round, written once.

The simulator's drivers (flat :class:`~fedstrata.sim.Simulation`, the tree of
:mod:`fedstrata.sim.hierarchy`, FedBuff in :mod:`fedstrata.sim.async_engine`) and the
gRPC runtime (:mod:`fedstrata.runtime.center`, :mod:`fedstrata.runtime.recorder`) take
these rules from here: the weighting rule, folding an update (dense vector or encoded
payload) into an aggregator's state or decoding it for a dense fold target (FedBuff's
buffer), refusing a malformed one in the words of a dense vector's refusal
(:func:`fedstrata.core.update.validate_vector`), and the server step of a closed round
(round hooks, the pipeline's server halves in reverse, the server optimizer). No I/O,
NumPy only. The evaluation cadence is :mod:`fedstrata.coordinator.cadence`; the
round's metric record and the events sent to the sinks are
:mod:`fedstrata.coordinator.round_metrics`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

from fedstrata.aggregation.protocol import Aggregator
from fedstrata.algorithms.server import ServerOptimizer
from fedstrata.coordinator.events import RoundOutcome
from fedstrata.coordinator.hooks import Publisher, RoundHook
from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import HEADER_SIZE, Payload
from fedstrata.errors import (
    FedstrataError,
    InvalidUpdateError,
    PayloadError,
    PrivacyBudgetExhausted,
    SecAggError,
)
from fedstrata.pipeline.stage import Codec, Pipeline

__all__ = [
    "Weighting",
    "apply_server_halves",
    "client_weight",
    "decode_update",
    "dense_bytes",
    "fold_update",
    "round_mean",
    "server_step",
    "start_hooks",
]

log = logging.getLogger(__name__)

Weighting = Literal["examples", "uniform"]


def dense_bytes(size: int) -> int:
    """Bytes of a dense float32 update or model of ``size`` entries on the wire."""
    return HEADER_SIZE + 4 * size


def client_weight(num_examples: int, weighting: Weighting) -> float:
    """The weighting rule: examples trained, or 1 (uniform; what DP needs)."""
    return float(num_examples) if weighting == "examples" else 1.0


@contextmanager
def _decoding(client_id: int) -> Iterator[None]:
    """A malformed payload refused as the client's invalid update (its reason then
    reads as a dense vector's: ``client 3: update has 2 NaN/Inf entries``)."""
    try:
        yield
    except PayloadError as exc:
        raise InvalidUpdateError(client_id, str(exc)) from exc


def _codec(client_id: int, codec: Codec | None) -> Codec:
    if codec is None:
        raise FedstrataError(f"client {client_id} sent a payload but the run has no pipeline")
    return codec


def fold_update(
    aggregator: Aggregator[Any],
    state: object,
    update: FloatVector | Payload,
    weight: float,
    codec: Codec | None,
    *,
    client_id: int,
    metrics: Mapping[str, float],
) -> tuple[object, float]:
    """Fold one accepted update (a checked dense vector, or a payload ``codec``
    decodes) into ``state``; returns the state and the decode seconds.

    Raises:
        InvalidUpdateError: a malformed payload (the state is left unchanged).
        FedstrataError: a payload without a codec, a bad weight or metrics.
    """
    if not isinstance(update, Payload):
        state = aggregator.accumulate(state, update, weight, client_id=client_id, metrics=metrics)
        return state, 0.0
    decoder = _codec(client_id, codec)
    start = time.perf_counter()
    with _decoding(client_id):
        state = aggregator.accumulate_payload(
            state, decoder, update, weight, client_id=client_id, metrics=metrics
        )
    return state, time.perf_counter() - start


def decode_update(
    update: FloatVector | Payload, codec: Codec | None, *, client_id: int
) -> tuple[FloatVector, float]:
    """The dense vector of one accepted update and the decode seconds:
    :func:`fold_update` for a fold target that takes dense vectors (FedBuff's buffer).

    Raises:
        InvalidUpdateError: a malformed payload.
        FedstrataError: a payload without a codec.
    """
    if not isinstance(update, Payload):
        return update, 0.0
    decoder = _codec(client_id, codec)
    start = time.perf_counter()
    with _decoding(client_id):
        vector = decoder.decode(update)
    return vector, time.perf_counter() - start


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
    broadcast: Publisher | None,
    root_seed: int,
) -> tuple[FloatVector, object]:
    """Apply a closed round: its mean, the server halves, the optimizer step, the
    broadcast's new version (None: nobody to tell); the model and optimizer state
    after it.

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
    if broadcast is not None:
        broadcast.publish(params, ctx)
    return params, opt_state
