"""A client's contribution to a round, and its validation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.payload import Payload
from fedstrata.errors import InvalidUpdateError

__all__ = ["Update", "validate_vector"]


@dataclass(frozen=True, eq=False)
class Update:
    """One client's update for one round.

    Attributes:
        client_id: who sent it.
        round_idx: the round it belongs to.
        data: the dense delta (new - old parameters, float32) or an encoded payload.
        num_examples: examples the client trained on.
        weight: aggregation weight (by default ``num_examples``).
        metrics: client-reported scalars (training loss, steps, ...).
    """

    client_id: int
    round_idx: int
    data: FloatVector | Payload
    num_examples: int
    weight: float
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_examples < 0:
            raise InvalidUpdateError(self.client_id, f"num_examples {self.num_examples} < 0")
        if not np.isfinite(self.weight) or self.weight < 0:
            raise InvalidUpdateError(self.client_id, f"weight {self.weight} is not finite >= 0")


def validate_vector(client_id: int, vector: object, spec: ParamSpec) -> FloatVector:
    """Check that a dense update matches ``spec`` and is finite.

    Raises:
        InvalidUpdateError: wrong type, dtype or shape, or NaN/Inf entries.
    """
    if not isinstance(vector, np.ndarray):
        raise InvalidUpdateError(client_id, f"update is {type(vector).__name__}, not an array")
    if vector.dtype != np.float32:
        raise InvalidUpdateError(client_id, f"update dtype {vector.dtype}, expected float32")
    if vector.shape != (spec.size,):
        raise InvalidUpdateError(
            client_id, f"update shape {vector.shape}, expected ({spec.size},)"
        )
    if not np.isfinite(vector).all():
        bad = int(np.count_nonzero(~np.isfinite(vector)))
        raise InvalidUpdateError(client_id, f"update has {bad} NaN/Inf entries")
    return vector
