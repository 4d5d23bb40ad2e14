"""The center's collected ring inputs of one secure-aggregation round (:class:`RingState`)
and their plaintext wraparound sum; used by :class:`~fedstrata.secagg.SecAggAggregator`
(which re-exports them) and the runtime's secure sessions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedstrata.aggregation.metrics import MetricSums
from fedstrata.errors import PayloadError
from fedstrata.secagg.codec import RingMessage
from fedstrata.secagg.options import SecAggReport
from fedstrata.secagg.prg import U32Vector

__all__ = ["RingState", "check_round", "ring_sum"]


@dataclass(eq=False)
class RingState:
    """Collected protocol inputs of one round; O(cohort x sent coordinates).

    Attributes:
        inputs: per accepted client, ``[w * q, w]`` in the ring (uint32).
        client_ids: who sent each input, in arrival order.
        weights: the integer weights folded in.
        round_idx: the round named by the payloads (``None`` until one arrives).
        seed: the random-k support seed named by the payloads.
        metrics: weighted sums of the client-reported metrics.
        capped: weights capped at ``max_weight``.
        report: set by ``finalize``.
    """

    size: int
    inputs: list[U32Vector] = field(default_factory=list)
    client_ids: list[int] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    round_idx: int | None = None
    seed: int = 0
    metrics: MetricSums = field(default_factory=MetricSums)
    capped: int = 0
    report: SecAggReport | None = None


def ring_sum(inputs: list[U32Vector], modulus_bits: int) -> U32Vector:
    """The plaintext wraparound sum of ring vectors (what secure aggregation reveals)."""
    total: U32Vector = np.add.reduce(np.stack(inputs), axis=0, dtype=np.uint32)
    total &= np.uint32((1 << modulus_bits) - 1)
    return total


def check_round(state: RingState, msg: RingMessage) -> None:
    """Raises: PayloadError: ``msg`` names another round or support seed than ``state``."""
    if state.round_idx is None:
        return
    if (msg.round_idx, msg.seed) != (state.round_idx, state.seed):
        raise PayloadError(
            f"ring payload is for round {msg.round_idx} (support seed {msg.seed}), but this "
            f"aggregate is round {state.round_idx} (support seed {state.seed})"
        )
