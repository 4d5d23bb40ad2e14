"""Weighted sums of client-reported scalar metrics, mergeable like the update sum.

Each metric keeps its own total weight, so a metric that only some clients report is
averaged over the clients that reported it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import AggregationError

__all__ = ["MetricSums"]


@dataclass(eq=False)
class MetricSums:
    """Per-metric ``sum(weight * value)`` and ``sum(weight)``; mutable, O(#metrics).

    Attributes:
        sums: weighted sum of each metric.
        weights: total weight of the clients that reported each metric.
    """

    sums: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def add(self, metrics: Mapping[str, float], weight: float) -> None:
        """Add already-validated ``metrics`` with ``weight``."""
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + weight * value
            self.weights[name] = self.weights.get(name, 0.0) + weight

    def merge(self, other: MetricSums) -> None:
        """Add ``other``'s sums into this one (``other`` is unchanged)."""
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.weights[name] = self.weights.get(name, 0.0) + other.weights[name]

    def means(self) -> dict[str, float]:
        """Weighted mean of each metric; metrics seen only with weight 0 are omitted."""
        return {
            name: total / self.weights[name]
            for name, total in sorted(self.sums.items())
            if self.weights[name] > 0
        }

    def copy(self) -> MetricSums:
        return MetricSums(dict(self.sums), dict(self.weights))

    def to_arrays(self) -> dict[str, NDArray[np.generic]]:
        """Names (unicode array), sums and weights (float64), in sorted name order."""
        names = sorted(self.sums)
        return {
            "metric_names": np.array(names, dtype=np.str_).reshape(len(names)),
            "metric_sums": np.array([self.sums[n] for n in names], dtype=np.float64),
            "metric_weights": np.array([self.weights[n] for n in names], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[np.generic]]) -> MetricSums:
        """Inverse of :meth:`to_arrays`.

        Raises:
            AggregationError: missing keys or arrays of mismatched length or kind.
        """
        try:
            names, sums, weights = (
                arrays[k] for k in ("metric_names", "metric_sums", "metric_weights")
            )
        except KeyError as exc:
            raise AggregationError(f"metric arrays lack key {exc.args[0]!r}") from None
        if not (names.ndim == sums.ndim == weights.ndim == 1) or not (
            names.shape == sums.shape == weights.shape
        ):
            raise AggregationError(
                f"metric arrays must be 1-D of one length, got {names.shape}, "
                f"{sums.shape}, {weights.shape}"
            )
        if names.dtype.kind != "U" or sums.dtype != np.float64 or weights.dtype != np.float64:
            raise AggregationError(
                f"metric arrays must be unicode/float64/float64, got {names.dtype}, "
                f"{sums.dtype}, {weights.dtype}"
            )
        keys = [str(n) for n in names]
        return cls(
            sums=dict(zip(keys, sums.tolist(), strict=True)),
            weights=dict(zip(keys, weights.tolist(), strict=True)),
        )
