"""A client's secure-aggregation input, one rule for the flat and the tree aggregators.

A client with ring elements ``q`` and aggregation weight ``w`` inputs ``[w q, w]``
(mod ``2^b``): the server learns ``sum(w q)`` and ``sum(w)``, never one weight. The
weight must be an integer no larger than ``max_weight`` (the ring's capacity):

* with ``rounding`` (partial-work settlement weights, or weights scaled to
  ``max_weight`` levels) the weight is multiplied by ``scale`` and rounded to the
  nearest integer >= 1;
* otherwise it must already be an integer;
* a weight above ``max_weight`` is capped (and reported as capped).
"""

from __future__ import annotations

import numpy as np

from fedstrata.aggregation.protocol import check_weight
from fedstrata.errors import InvalidUpdateError
from fedstrata.secagg.prg import U32Vector

__all__ = ["integer_weight", "weighted_input"]


def integer_weight(
    weight: float,
    max_weight: int,
    client_id: int,
    *,
    rounding: bool = False,
    scale: float = 1.0,
) -> tuple[int, bool]:
    """The integer aggregation weight and whether it was capped at ``max_weight``.

    Raises:
        InvalidUpdateError: a negative or non-finite weight, or (without ``rounding``)
            a non-integer one.
    """
    w = check_weight(weight, client_id)
    if rounding:
        w = float(max(1, round(w * scale)))
    if abs(w - round(w)) > 1e-9 * max(1.0, w):
        raise InvalidUpdateError(
            client_id, f"secure aggregation needs an integer weight, got {weight}"
        )
    if round(w) > max_weight:
        return max_weight, True
    return round(w), False


def weighted_input(values: U32Vector, weight: int, modulus_bits: int) -> U32Vector:
    """The protocol input ``[w * q mod 2^b, w]`` of ring elements ``q`` (a pure kernel)."""
    out = np.empty(values.shape[0] + 1, dtype=np.uint32)
    np.multiply(values, np.uint32(weight), out=out[:-1], dtype=np.uint32)
    out[:-1] &= np.uint32((1 << modulus_bits) - 1)
    out[-1] = weight
    return out
