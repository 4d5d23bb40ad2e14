"""Build an aggregator from a typed spec (the names match ``ServerConfig.aggregator``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedstrata.aggregation.mean import WeightedMean
from fedstrata.aggregation.robust import CoordinateMedian, Krum, TrimmedMean
from fedstrata.errors import ConfigError

__all__ = ["AggregatorName", "AggregatorSpec", "AnyAggregator", "make_aggregator"]

AggregatorName = Literal["mean", "median", "trimmed_mean", "krum"]
AnyAggregator = WeightedMean | CoordinateMedian | TrimmedMean | Krum
_NAMES: tuple[str, ...] = ("mean", "median", "trimmed_mean", "krum")


@dataclass(frozen=True)
class AggregatorSpec:
    """Which aggregator to build and its hyperparameters.

    Attributes:
        name: ``mean`` (mergeable, any tier) or a center-only robust aggregator.
        trim_fraction: ``beta`` of the trimmed mean, in ``[0, 0.5)``.
        krum_byzantine: ``f`` of Krum, >= 0.
        krum_m: how many best-scored updates multi-Krum averages, >= 1.
    """

    name: AggregatorName = "mean"
    trim_fraction: float = 0.1
    krum_byzantine: int = 1
    krum_m: int = 1

    def __post_init__(self) -> None:
        if self.name not in _NAMES:
            raise ConfigError(f"AggregatorSpec.name must be one of {_NAMES}, got {self.name!r}")


def make_aggregator(spec: AggregatorSpec) -> AnyAggregator:
    """The aggregator ``spec`` describes.

    Raises:
        ConfigError: a hyperparameter out of range (named in the message).
    """
    if spec.name == "mean":
        return WeightedMean()
    if spec.name == "median":
        return CoordinateMedian()
    if spec.name == "trimmed_mean":
        return TrimmedMean(beta=spec.trim_fraction)
    return Krum(num_byzantine=spec.krum_byzantine, multi_m=spec.krum_m)
