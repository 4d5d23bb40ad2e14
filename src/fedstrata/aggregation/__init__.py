"""Aggregators: the same ``init / accumulate / merge / finalize`` code at every tier.

:class:`WeightedMean` is mergeable and runs at edges, regions and the center; the
robust aggregators (:class:`CoordinateMedian`, :class:`TrimmedMean`, :class:`Krum`) hold
every vector and run at the center only.
"""

from fedstrata.aggregation.mean import MeanState, WeightedMean
from fedstrata.aggregation.metrics import MetricSums
from fedstrata.aggregation.protocol import (
    UNKNOWN_CLIENT,
    Aggregator,
    accumulate_update,
    check_vector,
)
from fedstrata.aggregation.registry import (
    AggregatorName,
    AggregatorSpec,
    AnyAggregator,
    make_aggregator,
)
from fedstrata.aggregation.robust import (
    CoordinateMedian,
    Krum,
    TrimmedMean,
    VectorListState,
    coordinate_median,
    krum_scores,
    pairwise_sq_distances,
    trimmed_mean,
)

__all__ = [
    "UNKNOWN_CLIENT",
    "Aggregator",
    "AggregatorName",
    "AggregatorSpec",
    "AnyAggregator",
    "CoordinateMedian",
    "Krum",
    "MeanState",
    "MetricSums",
    "TrimmedMean",
    "VectorListState",
    "WeightedMean",
    "accumulate_update",
    "check_vector",
    "coordinate_median",
    "krum_scores",
    "make_aggregator",
    "pairwise_sq_distances",
    "trimmed_mean",
]
