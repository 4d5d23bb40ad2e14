"""The weighted mean (FedAvg aggregation), mergeable at every tier.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017: the server averages client updates weighted by their number of
examples. The state is a float64 running sum of ``weight * vector`` plus the total
weight, so memory is O(model) whatever the cohort size, and partial sums from edges
and regions merge by addition.

Merging is associative and commutative up to floating-point rounding: float64 addition
is not associative, so a different merge tree sums the same terms in a different order
and may differ in the last bits (relative error ~1e-15 on the sum, far below the
float32 resolution of the result). The same tree in the same order always gives the
same bits, and a left fold that merges one-client partials equals serial accumulation
bit for bit.

Accumulation dtype: ``WeightedMean(sum_dtype="float32")`` keeps the running sum in
float32 (half the memory; the deployment runtime uses it for models above a size
threshold so the center's peak stays under 2x the model). Each addition then rounds
to float32: after n updates the sum's relative error grows like n * 2**-24 in the
worst case (about sqrt(n) * 2**-24 typically), versus ~2**-24 for the float32 result
of the float64 default; results are no longer bit-identical to the float64 path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import final

import numpy as np
from numpy.typing import NDArray

from fedstrata.aggregation.metrics import MetricSums
from fedstrata.aggregation.protocol import (
    UNKNOWN_CLIENT,
    check_metrics,
    check_size,
    check_vector,
    check_weight,
)
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.errors import AggregationError, ConfigError, PayloadError, ShapeError
from fedstrata.pipeline.stage import Codec

__all__ = ["MeanState", "WeightedMean"]

logger = logging.getLogger(__name__)

_KEYS = ("weighted_sum", "total_weight", "count")


@dataclass(eq=False)
class MeanState:
    """Running (partial) aggregate of a :class:`WeightedMean`; mutable, O(model) memory.

    Attributes:
        weighted_sum: sum of ``weight * vector`` (float64, or float32 under
            ``WeightedMean(sum_dtype="float32")``).
        total_weight: sum of the weights.
        count: number of client updates summed in.
        metrics: weighted sums of the client-reported metrics.
    """

    weighted_sum: NDArray[np.float64]
    total_weight: float = 0.0
    count: int = 0
    metrics: MetricSums = field(default_factory=MetricSums)

    @property
    def size(self) -> int:
        return int(self.weighted_sum.shape[0])

    def copy(self) -> MeanState:
        """A deep copy (the sum buffer included)."""
        return MeanState(
            self.weighted_sum.copy(), self.total_weight, self.count, self.metrics.copy()
        )

    def to_arrays(self) -> dict[str, NDArray[np.generic]]:
        """Arrays for a checkpoint or for sending a partial aggregate up a tier.

        :meth:`from_arrays` restores the state bit for bit (a float32 sum comes back
        as float64, exactly).
        """
        return {
            "weighted_sum": self.weighted_sum.astype(np.float64),
            "total_weight": np.array(self.total_weight, dtype=np.float64),
            "count": np.array(self.count, dtype=np.int64),
            **self.metrics.to_arrays(),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[np.generic]]) -> MeanState:
        """Rebuild a state from :meth:`to_arrays` output.

        Raises:
            AggregationError: missing keys, wrong dtypes or shapes, or impossible values.
        """
        missing = [k for k in _KEYS if k not in arrays]
        if missing:
            raise AggregationError(f"MeanState arrays lack keys {missing}")
        wsum, total, count = (np.asarray(arrays[k]) for k in _KEYS)
        if wsum.dtype != np.float64 or wsum.ndim != 1:
            raise AggregationError(
                f"MeanState weighted_sum must be 1-D float64, got {wsum.dtype} {wsum.shape}"
            )
        if total.shape != () or count.shape != () or count.dtype.kind not in "iu":
            raise AggregationError("MeanState total_weight and count must be scalars")
        if not np.isfinite(total) or total < 0 or count < 0:
            raise AggregationError(
                f"MeanState total_weight {total} and count {count} must be finite and >= 0"
            )
        return cls(
            weighted_sum=wsum.copy(),
            total_weight=float(total),
            count=int(count),
            metrics=MetricSums.from_arrays(arrays),
        )


@final
@dataclass(frozen=True)
class WeightedMean:
    """``sum(w_i * x_i) / sum(w_i)``; runs at every tier (``mergeable`` is true).

    Args:
        sum_dtype: dtype of the running sum: ``float64`` (default, exact order-stable
            reference) or ``float32`` (half the memory, see the module docstring).

    Raises:
        ConfigError: ``sum_dtype`` is neither.
    """

    sum_dtype: str = "float64"

    def __post_init__(self) -> None:
        if self.sum_dtype not in ("float64", "float32"):
            raise ConfigError(
                f"WeightedMean.sum_dtype must be 'float64' or 'float32', got {self.sum_dtype!r}"
            )

    @property
    def mergeable(self) -> bool:
        return True

    def init(self, size: int) -> MeanState:
        """An empty state for vectors of ``size`` entries.

        Raises:
            ShapeError: ``size`` is negative or not an integer.
        """
        return MeanState(np.zeros(check_size(size), dtype=np.dtype(self.sum_dtype)))

    def accumulate(
        self,
        state: MeanState,
        vector: FloatVector,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> MeanState:
        """Add ``weight * vector`` into ``state`` in place and return it.

        Raises:
            ShapeError: ``vector`` is not float32 of the state's size.
            InvalidUpdateError: NaN/Inf entries or metrics, or a bad weight.
        """
        check_vector(vector, state.size, client_id)
        w = check_weight(weight, client_id)
        checked = check_metrics(metrics, client_id)
        # Same arithmetic as DenseCodec.accumulate: exact f32->f64 cast, one f64 product.
        # float32 sums: the f64 product is rounded once into the f32 sum.
        state.weighted_sum += np.multiply(vector, w, dtype=np.float64)
        return _count(state, w, checked)

    def accumulate_payload(
        self,
        state: MeanState,
        codec: Codec,
        payload: Payload,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> MeanState:
        """Decode ``payload`` straight into the running sum (no dense temporary kept).

        Raises:
            PayloadError: the payload is malformed; ``state`` is unchanged.
            ShapeError: the codec decodes to a vector of another size; ``state`` is
                unchanged.
            InvalidUpdateError: a bad weight or non-finite metrics.
        """
        w = check_weight(weight, client_id)
        checked = check_metrics(metrics, client_id)
        try:
            codec.accumulate(payload, state.weighted_sum, w)
        except PayloadError as exc:
            logger.warning("client %d: rejected malformed payload: %s", client_id, exc)
            raise
        except ValueError as exc:  # NumPy broadcasting: decoded size != state size
            raise ShapeError(
                f"client {client_id}: codec {codec.name!r} decoded a vector that does not "
                f"fit an aggregate of size {state.size}: {exc}"
            ) from exc
        return _count(state, w, checked)

    def merge(self, a: MeanState, b: MeanState) -> MeanState:
        """Add partial ``b`` into ``a`` in place and return ``a``.

        Raises:
            AggregationError: the partials have different sizes.
        """
        if a.size != b.size:
            raise AggregationError(f"cannot merge mean partials of sizes {a.size} and {b.size}")
        if a is b:
            raise AggregationError("cannot merge a mean partial with itself; copy it first")
        a.weighted_sum += b.weighted_sum
        a.total_weight += b.total_weight
        a.count += b.count
        a.metrics.merge(b.metrics)
        return a

    def finalize(self, state: MeanState) -> FloatVector:
        """The weighted mean as float32.

        Raises:
            AggregationError: the total weight is 0 (nothing, or only zero weights, summed).
        """
        if state.total_weight <= 0:
            raise AggregationError(
                f"cannot finalize a weighted mean with total weight {state.total_weight} "
                f"({state.count} updates)"
            )
        return (state.weighted_sum / state.total_weight).astype(np.float32)

    def finalize_metrics(self, state: MeanState) -> dict[str, float]:
        """Weighted mean of each metric reported with positive weight."""
        return state.metrics.means()


def _count(state: MeanState, weight: float, metrics: Mapping[str, float]) -> MeanState:
    state.total_weight += weight
    state.count += 1
    state.metrics.add(metrics, weight)
    return state
