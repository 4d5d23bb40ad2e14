"""A client's contribution to a round, and its validation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.payload import Payload
from fedstrata.errors import InvalidUpdateError

__all__ = ["Update", "check_update", "nonfinite_problem", "shape_problem", "validate_vector"]


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
    return check_update(client_id, vector, spec.size)


def check_update(client_id: int, vector: object, size: int) -> FloatVector:
    """Check that a dense update is a finite float32 vector of ``size`` entries: the
    words every driver refuses a bad update in (a dense payload's too, see
    :class:`~fedstrata.pipeline.dense.DenseCodec`).

    Raises:
        InvalidUpdateError: wrong type, dtype or shape, or NaN/Inf entries.
    """
    if not isinstance(vector, np.ndarray):
        raise InvalidUpdateError(client_id, f"update is {type(vector).__name__}, not an array")
    if vector.dtype != np.float32:
        raise InvalidUpdateError(client_id, f"update dtype {vector.dtype}, expected float32")
    problem = shape_problem(vector.shape, size) or nonfinite_problem(vector)
    if problem is not None:
        raise InvalidUpdateError(client_id, problem)
    return vector


def shape_problem(shape: tuple[int, ...], size: int) -> str | None:
    """Why an update of ``shape`` does not fit a model of ``size`` entries, or None.

    The wording of every driver's refusal (a dense vector, a dense payload's body).
    """
    if shape == (size,):
        return None
    return f"update shape {shape}, expected ({size},)"


def nonfinite_problem(vector: FloatVector) -> str | None:
    """How many NaN/Inf entries ``vector`` has, as the reason to refuse it, or None."""
    if np.isfinite(vector).all():
        return None
    bad = int(np.count_nonzero(~np.isfinite(vector)))
    return f"update has {bad} NaN/Inf entries"
