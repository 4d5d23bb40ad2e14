"""Byzantine-robust aggregators; they run at the center only.

* :class:`CoordinateMedian` and :class:`TrimmedMean`: Yin et al., "Byzantine-Robust
  Distributed Learning: Towards Optimal Statistical Rates", ICML 2018.
* :class:`Krum` and multi-Krum: Blanchard et al., "Machine Learning with Adversaries:
  Byzantine Tolerant Gradient Descent", NeurIPS 2017.

These statistics are not decomposable: the median of medians is not the median. Their
state therefore holds every accumulated vector (a list), so memory is
O(cohort x model), and ``merge`` raises :class:`~fedstrata.errors.AggregationError`:
they cannot run at edge or region tiers (``mergeable`` is false). Weights are validated
but otherwise ignored: the estimators are defined on the unweighted sample (every
client counts once), which is what makes them robust to a client that claims a huge
weight. Client metrics are still averaged with the weights, like the mean does.

The kernels are vectorised on the stacked ``(n, d)`` matrix: one ``np.sort`` along the
client axis (measured 3-6x faster than ``np.median`` or ``np.partition`` along that
axis, for 5 to 200 clients), and Krum's pairwise squared distances via the Gram matrix
``|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>`` in float64 after centring.

Finalize stacks the list into one matrix and sorts it in place, so the peak memory is
about twice the list's.
"""

from __future__ import annotations

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
from fedstrata.errors import AggregationError, ConfigError
from fedstrata.pipeline.stage import Codec

__all__ = [
    "CoordinateMedian",
    "Krum",
    "TrimmedMean",
    "VectorListState",
    "coordinate_median",
    "krum_scores",
    "pairwise_sq_distances",
    "trimmed_mean",
]

_INNER_TIER = (
    "robust aggregators cannot run at inner tiers: {name} is not mergeable "
    "(run it at the center, and the weighted mean at edges and regions)"
)


@dataclass(eq=False)
class VectorListState:
    """Every accumulated vector (copied), for center-only robust aggregators.

    Memory is O(cohort x model).

    Attributes:
        size: length of each vector.
        vectors: the accumulated float32 vectors, in arrival order.
        client_ids: the sender of each vector (``-1`` when unknown).
        metrics: weighted sums of the client-reported metrics.
    """

    size: int
    vectors: list[FloatVector] = field(default_factory=list)
    client_ids: list[int] = field(default_factory=list)
    metrics: MetricSums = field(default_factory=MetricSums)

    def stacked(self) -> NDArray[np.float32]:
        """The vectors as one ``(n, size)`` float32 matrix.

        Raises:
            AggregationError: no vector was accumulated.
        """
        if not self.vectors:
            raise AggregationError("cannot finalize a robust aggregator with no updates")
        return np.stack(self.vectors)


def _append(
    state: VectorListState,
    vector: FloatVector,
    weight: float,
    client_id: int,
    metrics: Mapping[str, float] | None,
) -> VectorListState:
    check_vector(vector, state.size, client_id)
    w = check_weight(weight, client_id)
    checked = check_metrics(metrics, client_id)
    state.vectors.append(np.array(vector, dtype=np.float32, copy=True))
    state.client_ids.append(client_id)
    state.metrics.add(checked, w)
    return state


class _CenterOnly:
    """Methods shared by the robust aggregators; each concrete class adds ``finalize``."""

    @property
    def mergeable(self) -> bool:
        return False

    def init(self, size: int) -> VectorListState:
        """An empty list state for vectors of ``size`` entries.

        Raises:
            ShapeError: ``size`` is negative or not an integer.
        """
        return VectorListState(check_size(size))

    def accumulate(
        self,
        state: VectorListState,
        vector: FloatVector,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> VectorListState:
        """Append a copy of ``vector`` to ``state`` and return it.

        Raises:
            ShapeError: ``vector`` is not float32 of the state's size.
            InvalidUpdateError: NaN/Inf entries or metrics, or a bad weight.
        """
        return _append(state, vector, weight, client_id, metrics)

    def accumulate_payload(
        self,
        state: VectorListState,
        codec: Codec,
        payload: Payload,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> VectorListState:
        """Decode ``payload`` with ``codec`` and append the vector.

        Raises:
            PayloadError: the payload is malformed; ``state`` is unchanged.
            ShapeError: the decoded vector has the wrong size.
            InvalidUpdateError: a bad weight or non-finite metrics.
        """
        vector = codec.decode(payload)  # a PayloadError leaves the state unchanged
        return _append(state, vector, weight, client_id, metrics)

    def merge(self, a: VectorListState, b: VectorListState) -> VectorListState:
        """Always fails: robust statistics are not decomposable.

        Raises:
            AggregationError: always.
        """
        raise AggregationError(_INNER_TIER.format(name=type(self).__name__))

    def finalize_metrics(self, state: VectorListState) -> dict[str, float]:
        """Weighted mean of each metric reported with positive weight."""
        return state.metrics.means()


def _sorted_columns(matrix: NDArray[np.float32], overwrite_input: bool) -> NDArray[np.float32]:
    # A full sort along the client axis measured 3-6x faster than np.median or
    # np.partition along axis 0 on this kind of machine (SIMD sort; n=5..200 clients).
    if overwrite_input:
        matrix.sort(axis=0)
        return matrix
    return np.sort(matrix, axis=0)


def coordinate_median(
    matrix: NDArray[np.float32], *, overwrite_input: bool = False
) -> FloatVector:
    """Median of each column of ``matrix`` (rows are clients), as float32.

    With an even number of rows the two middle values are averaged in float64.
    ``overwrite_input=True`` sorts ``matrix`` in place instead of a copy.
    """
    n = matrix.shape[0]
    ordered = _sorted_columns(matrix, overwrite_input)
    if n % 2:
        middle: FloatVector = ordered[n // 2].copy()
        return middle
    return _row_mean(ordered[n // 2 - 1 : n // 2 + 1])


def trimmed_mean(
    matrix: NDArray[np.float32], trim: int, *, overwrite_input: bool = False
) -> FloatVector:
    """Mean of each column after dropping its ``trim`` smallest and largest values.

    ``overwrite_input=True`` sorts ``matrix`` in place instead of a copy.

    Raises:
        AggregationError: ``2 * trim >= rows`` (nothing would be left).
    """
    n = matrix.shape[0]
    if 2 * trim >= n:
        raise AggregationError(
            f"trimmed mean drops {trim} from each end of {n} updates: nothing is left"
        )
    kept = matrix if trim == 0 else _sorted_columns(matrix, overwrite_input)
    return _row_mean(kept[trim : n - trim])


def _row_mean(matrix: NDArray[np.float32]) -> FloatVector:
    mean: NDArray[np.float64] = matrix.mean(axis=0, dtype=np.float64)
    return mean.astype(np.float32)


def pairwise_sq_distances(matrix: NDArray[np.float32]) -> NDArray[np.float64]:
    """``(n, n)`` squared Euclidean distances between rows, via the Gram matrix.

    Rows are centred on their mean first (distances are translation invariant) and the
    product is taken in float64, which keeps the cancellation in
    ``|x|^2 + |y|^2 - 2<x, y>`` small; tiny negative results are clipped to 0. Needs a
    float64 copy of ``matrix`` (twice its float32 size).
    """
    x = matrix.astype(np.float64)
    x -= x.mean(axis=0)
    gram = x @ x.T
    norms = np.diag(gram)
    dist = norms[:, None] + norms[None, :] - 2.0 * gram
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def krum_scores(matrix: NDArray[np.float32], num_byzantine: int) -> NDArray[np.float64]:
    """Krum score of each row: sum of squared distances to its ``n - f - 2`` nearest rows.

    Raises:
        AggregationError: fewer than ``2 f + 3`` rows (Krum's requirement ``n > 2f + 2``).
    """
    n, f = matrix.shape[0], num_byzantine
    if n < 2 * f + 3:
        raise AggregationError(
            f"Krum with num_byzantine={f} needs at least {2 * f + 3} updates (n > 2f + 2), got {n}"
        )
    dist = pairwise_sq_distances(matrix)
    np.fill_diagonal(dist, np.inf)  # exclude each row from its own neighbours
    closest = n - f - 2
    if closest == 0:
        return np.zeros(n, dtype=np.float64)
    nearest = np.partition(dist, closest - 1, axis=1)[:, :closest]
    scores: NDArray[np.float64] = nearest.sum(axis=1)
    return scores


@final
@dataclass(frozen=True)
class CoordinateMedian(_CenterOnly):
    """Coordinate-wise median (center only; O(cohort x model) memory)."""

    def finalize(self, state: VectorListState) -> FloatVector:
        """The coordinate-wise median of the accumulated vectors.

        Raises:
            AggregationError: no update was accumulated.
        """
        return coordinate_median(state.stacked(), overwrite_input=True)


@final
@dataclass(frozen=True)
class TrimmedMean(_CenterOnly):
    """Coordinate-wise ``beta``-trimmed mean (center only; O(cohort x model) memory).

    Attributes:
        beta: fraction of the cohort dropped from *each* end of every coordinate,
            ``floor(beta * n)`` values each side; in ``[0, 0.5)``.
    """

    beta: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 0.5:
            raise ConfigError(f"TrimmedMean.beta must be in [0, 0.5), got {self.beta}")

    def finalize(self, state: VectorListState) -> FloatVector:
        """The trimmed mean of the accumulated vectors.

        Raises:
            AggregationError: no update, or ``2 floor(beta n) >= n``.
        """
        matrix = state.stacked()
        trim = int(np.floor(self.beta * matrix.shape[0]))
        return trimmed_mean(matrix, trim, overwrite_input=True)


@final
@dataclass(frozen=True)
class Krum(_CenterOnly):
    """Krum (``multi_m == 1``) or multi-Krum (average of the ``multi_m`` best scores).

    Attributes:
        num_byzantine: ``f``, the number of Byzantine clients tolerated; needs
            ``n >= 2f + 3`` updates at finalize.
        multi_m: how many of the best-scored updates are averaged; ``<= n - f``.
    """

    num_byzantine: int = 1
    multi_m: int = 1

    def __post_init__(self) -> None:
        if self.num_byzantine < 0:
            raise ConfigError(f"Krum.num_byzantine must be >= 0, got {self.num_byzantine}")
        if self.multi_m < 1:
            raise ConfigError(f"Krum.multi_m must be >= 1, got {self.multi_m}")

    def select(self, state: VectorListState) -> list[int]:
        """Indices (into ``state.vectors``) of the selected updates, best first.

        Ties in score are broken by client id, then by arrival order.

        Raises:
            AggregationError: too few updates for ``num_byzantine`` and ``multi_m``.
        """
        matrix = state.stacked()
        n = matrix.shape[0]
        if self.multi_m > n - self.num_byzantine:
            raise AggregationError(
                f"multi-Krum with multi_m={self.multi_m} needs multi_m <= n - f = "
                f"{n - self.num_byzantine}"
            )
        scores = krum_scores(matrix, self.num_byzantine)
        order = np.lexsort((np.arange(n), np.asarray(state.client_ids), scores))
        return [int(i) for i in order[: self.multi_m]]

    def finalize(self, state: VectorListState) -> FloatVector:
        """The (multi-)Krum aggregate.

        Raises:
            AggregationError: no update, or too few for ``num_byzantine`` and ``multi_m``.
        """
        chosen = self.select(state)
        return _row_mean(np.stack([state.vectors[i] for i in chosen]))
