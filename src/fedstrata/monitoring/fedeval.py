"""Federated evaluation results: each client's metrics and their distribution.

Most enterprises have no central test set: the global model is evaluated by the
clients themselves, each on its own held-out data (Issue 14 part 3). One
:class:`FedEvalMetrics` event per evaluated round carries every evaluated client's
named metrics (:class:`ClientEval`) and, per metric, the distribution over clients
(:class:`MetricDistribution`):

* ``mean``: weighted by each client's number of evaluation examples, so it equals the
  metric of the pooled held-out data for averages such as accuracy and mean loss;
* ``std``, ``p10``, ``p50``, ``p90``, ``min``, ``max``: over clients, each client
  counting once (the spread a branch manager sees);
* ``worst10``: the mean over the worst 10% of clients (at least one), as reported by
  Li et al., "Fair Resource Allocation in Federated Learning" (ICLR 2020). Worst is
  the lowest value, except for metrics whose name says lower is better (``loss``,
  ``error``, ``mse``, ``mae``, ...), where it is the highest.

A client whose metric is NaN (an AUC on a client holding one class) is left out of
that metric's distribution only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from fedstrata.errors import DataError

__all__ = [
    "ClientEval",
    "FedEvalMetrics",
    "MetricDistribution",
    "distribution",
    "higher_is_better",
]

WORST_FRACTION = 0.1
_LOWER_IS_BETTER = ("loss", "error", "err", "mse", "mae", "rmse", "perplexity")


def higher_is_better(metric: str) -> bool:
    """False for metrics whose name says lower is better (``loss``, ``val_mse``...)."""
    words = metric.lower().replace("-", "_").split("_")
    return not any(w in _LOWER_IS_BETTER for w in words)


def _check_count(event: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"{event}: {name}={value!r} is invalid: must be an int >= 0")
    return value


@dataclass(frozen=True)
class ClientEval:
    """One client's evaluation of the global model on its own held-out data.

    Attributes:
        client_id: the client.
        num_examples: examples it evaluated on (its weight in the mean).
        metrics: the task's named metrics (``accuracy``, ``loss``, ``auc`` ...).
    """

    client_id: int
    num_examples: int
    metrics: Mapping[str, float]

    def __post_init__(self) -> None:
        """Raises: DataError: negative counts or non-numeric metrics."""
        ev = f"ClientEval(client {self.client_id!r})"
        _check_count(ev, "client_id", self.client_id)
        _check_count(ev, "num_examples", self.num_examples)
        try:
            checked = {str(k): float(v) for k, v in self.metrics.items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{ev}: metrics must map names to numbers: {exc}") from None
        object.__setattr__(self, "metrics", MappingProxyType(checked))


@dataclass(frozen=True)
class MetricDistribution:
    """One metric over the evaluated clients (see the module docstring).

    Attributes:
        metric: its name.
        clients: clients with a finite value of it.
        examples: their evaluation examples.
        mean: example-weighted mean.
        std: standard deviation over clients (each counts once; ``ddof=0``).
        p10, p50, p90: percentiles over clients (linear interpolation).
        min, max: extremes over clients.
        worst10: mean over the worst 10% of clients (at least one).
        higher_is_better: which way "worst" points.
    """

    metric: str
    clients: int
    examples: int
    mean: float
    std: float
    p10: float
    p50: float
    p90: float
    min: float
    max: float
    worst10: float
    higher_is_better: bool


def distribution(metric: str, results: Iterable[ClientEval]) -> MetricDistribution | None:
    """``metric``'s distribution over ``results`` (None when no client has a finite value)."""
    pairs = [
        (r.metrics[metric], r.num_examples)
        for r in results
        if metric in r.metrics and math.isfinite(r.metrics[metric])
    ]
    if not pairs:
        return None
    values = np.array([v for v, _ in pairs], dtype=np.float64)
    weights = np.array([n for _, n in pairs], dtype=np.float64)
    mean = float(values @ weights / weights.sum()) if weights.sum() > 0 else float(values.mean())
    up = higher_is_better(metric)
    k = max(1, math.ceil(WORST_FRACTION * values.size))
    ordered = np.sort(values)
    worst = ordered[:k] if up else ordered[-k:]
    p10, p50, p90 = (float(p) for p in np.percentile(values, [10, 50, 90]))
    return MetricDistribution(
        metric, int(values.size), int(weights.sum()), mean, float(values.std()),
        p10, p50, p90, float(ordered[0]), float(ordered[-1]), float(worst.mean()), up,
    )  # fmt: skip


@dataclass(frozen=True)
class FedEvalMetrics:
    """A round's federated evaluation (an event for the sinks; see the module docstring).

    Attributes:
        round_idx: the round whose final global model was evaluated.
        clients_selected: clients asked to evaluate.
        clients_failed: those whose evaluation failed (their reasons are stored as
            client failures).
        wall_s: wall time the evaluation took (it costs no simulated time).
        results: each successful client's metrics, by client id.
        distributions: per metric, its distribution over ``results``, by name.
    """

    round_idx: int
    clients_selected: int
    clients_failed: int
    wall_s: float
    results: tuple[ClientEval, ...]
    distributions: tuple[MetricDistribution, ...] = field(default=())

    def __post_init__(self) -> None:
        """Raises: DataError: negative counts, or more results than clients selected."""
        ev = f"FedEvalMetrics(round {self.round_idx!r})"
        for name in ("round_idx", "clients_selected", "clients_failed"):
            _check_count(ev, name, getattr(self, name))
        if len(self.results) + self.clients_failed > self.clients_selected:
            raise DataError(f"{ev}: results + failed exceed clients_selected")
        if not (isinstance(self.wall_s, int | float) and self.wall_s >= 0):
            raise DataError(f"{ev}: wall_s={self.wall_s!r} is invalid: must be >= 0")
        object.__setattr__(self, "results", tuple(self.results))
        object.__setattr__(self, "distributions", tuple(self.distributions))

    @classmethod
    def from_results(
        cls, round_idx: int, selected: int, results: Sequence[ClientEval], wall_s: float
    ) -> FedEvalMetrics:
        """The event for ``results``, with every metric's distribution computed."""
        ordered = tuple(sorted(results, key=lambda r: r.client_id))
        names = sorted({name for r in ordered for name in r.metrics})
        dists = tuple(d for d in (distribution(n, ordered) for n in names) if d is not None)
        failed = selected - len(ordered)
        return cls(round_idx, selected, failed, wall_s, ordered, dists)

    def get(self, metric: str) -> MetricDistribution | None:
        """The distribution of ``metric``, or None when it was not measured."""
        return next((d for d in self.distributions if d.metric == metric), None)

    def headline(self) -> dict[str, float]:
        """``{metric}_mean`` and ``{metric}_worst10`` of every metric (for summaries)."""
        out: dict[str, float] = {}
        for d in self.distributions:
            out[f"{d.metric}_mean"] = d.mean
            out[f"{d.metric}_worst10"] = d.worst10
        return out
