"""The aggregator protocol every tier runs, and the input checks all aggregators share.

Every tier of the aggregation tree (edge, region, center) runs the same aggregator
code: an edge :meth:`~Aggregator.accumulate`\\ s its clients' updates into a partial
aggregate, a region :meth:`~Aggregator.merge`\\ s its edges' partials, and the center
merges the regions' partials and calls :meth:`~Aggregator.finalize`. Flat federated
learning is the tree of depth one. Only aggregators whose ``mergeable`` is true may run
at inner tiers; robust statistics such as the coordinate-wise median are not
decomposable and run at the center only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol, TypeVar

import numpy as np

from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.core.update import Update, nonfinite_problem, shape_problem
from fedstrata.errors import AggregationError, InvalidUpdateError, ShapeError
from fedstrata.pipeline.stage import Codec

__all__ = [
    "UNKNOWN_CLIENT",
    "Aggregator",
    "accumulate_update",
    "check_metrics",
    "check_size",
    "check_vector",
    "check_weight",
]

UNKNOWN_CLIENT = -1
"""Client id reported in errors when the caller did not say whose update it was."""

S = TypeVar("S")


class Aggregator(Protocol[S]):
    """Combines client updates into one vector through an explicit state ``S``.

    ``accumulate`` and ``merge`` may mutate their first state argument and return it
    (so that memory stays O(model) for mergeable aggregators); they never mutate the
    vector, the payload or the second state. On error they leave the state unchanged.
    """

    @property
    def mergeable(self) -> bool:
        """Whether partial states may be merged, i.e. whether it may run at inner tiers."""
        ...

    def init(self, size: int) -> S:
        """An empty state for vectors of ``size`` float32 entries."""
        ...

    def accumulate(
        self,
        state: S,
        vector: FloatVector,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> S:
        """Add one client's dense update (and its reported metrics) with ``weight``."""
        ...

    def accumulate_payload(
        self,
        state: S,
        codec: Codec,
        payload: Payload,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> S:
        """Add one client's encoded update, decoding it with ``codec``."""
        ...

    def merge(self, a: S, b: S) -> S:
        """Combine two partial states (may reuse ``a``; never changes ``b``)."""
        ...

    def finalize(self, state: S) -> FloatVector:
        """The aggregate as a float32 vector."""
        ...

    def finalize_metrics(self, state: S) -> dict[str, float]:
        """The weighted mean of each client metric seen."""
        ...


def check_vector(vector: object, size: int, client_id: int = UNKNOWN_CLIENT) -> FloatVector:
    """Return ``vector`` if it is a finite 1-D float32 array of ``size`` entries.

    Raises:
        ShapeError: not an ndarray, not 1-D float32, or not ``size`` long.
        InvalidUpdateError: NaN or Inf entries.
    """
    if not isinstance(vector, np.ndarray):
        raise ShapeError(
            f"client {client_id}: update must be a numpy array, got {type(vector).__name__}"
        )
    shape = shape_problem(vector.shape, size)
    if shape is not None:
        raise ShapeError(f"client {client_id}: {shape}")
    if vector.dtype != np.float32:
        raise ShapeError(f"client {client_id}: update dtype {vector.dtype}, expected float32")
    values = nonfinite_problem(vector)
    if values is not None:
        raise InvalidUpdateError(client_id, values)
    return vector


def check_weight(weight: float, client_id: int = UNKNOWN_CLIENT) -> float:
    """Return ``weight`` as a float if it is finite and >= 0.

    Raises:
        InvalidUpdateError: negative, NaN or infinite weight.
    """
    value = float(weight)
    if not math.isfinite(value) or value < 0:
        raise InvalidUpdateError(client_id, f"weight must be finite and >= 0, got {weight}")
    return value


def check_metrics(
    metrics: Mapping[str, float] | None, client_id: int = UNKNOWN_CLIENT
) -> dict[str, float]:
    """Return ``metrics`` as a new dict of finite floats (empty for ``None``).

    Raises:
        InvalidUpdateError: a metric value that is not a finite number.
    """
    if metrics is None:
        return {}
    checked: dict[str, float] = {}
    for name, value in metrics.items():
        number = float(value)
        if not math.isfinite(number):
            raise InvalidUpdateError(client_id, f"metric {name!r} is {value}, not finite")
        checked[str(name)] = number
    return checked


def check_size(size: int) -> int:
    """Return ``size`` if it is a non-negative integer.

    Raises:
        ShapeError: negative or non-integer size.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
        raise ShapeError(f"aggregator size must be an integer >= 0, got {size!r}")
    return int(size)


def accumulate_update(
    aggregator: Aggregator[S], state: S, update: Update, codec: Codec | None = None
) -> S:
    """Add an :class:`~fedstrata.core.Update` whether it carries a vector or a payload.

    Raises:
        AggregationError: the update carries a payload but no ``codec`` was given.
        PayloadError: the payload is malformed (the state is unchanged).
        ShapeError: the vector has the wrong shape or dtype.
        InvalidUpdateError: NaN/Inf entries or metrics.
    """
    if isinstance(update.data, Payload):
        if codec is None:
            raise AggregationError(
                f"client {update.client_id}: update carries a payload but no codec was given"
            )
        return aggregator.accumulate_payload(
            state,
            codec,
            update.data,
            update.weight,
            client_id=update.client_id,
            metrics=update.metrics,
        )
    return aggregator.accumulate(
        state, update.data, update.weight, client_id=update.client_id, metrics=update.metrics
    )
