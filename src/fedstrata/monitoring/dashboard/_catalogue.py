"""The dashboard's one seam onto the metric catalogue and the alert rules.

The twelve metrics (:mod:`fedstrata.monitoring.catalogue`) and the alert rules
(:mod:`fedstrata.monitoring.alerts`) are defined once, elsewhere; the dashboard reads
them through a :class:`Catalogue` so tests and benchmarks may pass their own rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fedstrata.monitoring.alerts import DEFAULT_RULES, Alert, AlertRule, evaluate
from fedstrata.monitoring.catalogue import METRICS, MetricDef, federation_metrics
from fedstrata.monitoring.events import RoundMetrics
from fedstrata.monitoring.live import extra_values

__all__ = [
    "GROUPS",
    "Alert",
    "AlertRule",
    "Catalogue",
    "MetricDef",
    "MetricRow",
    "alert_rows",
    "default_catalogue",
]

MetricRow = Mapping[str, float | None]
GROUPS: tuple[str, ...] = ("communication", "compute", "quality", "reliability")


@dataclass(frozen=True)
class Catalogue:
    """What the dashboard shows: metric definitions, their computation, alert rules.

    Attributes:
        metrics: the metric definitions, in display order.
        compute: one row (metric key -> value, None where not applicable) per round.
        rules: the alert rules evaluated over the rows.
        alerts: evaluates ``rules`` over the rows.
    """

    metrics: tuple[MetricDef, ...]
    compute: Callable[[Sequence[RoundMetrics]], list[dict[str, float | None]]]
    rules: tuple[AlertRule, ...]
    alerts: Callable[[Sequence[AlertRule], Sequence[MetricRow]], list[Alert]]


def alert_rows(
    rounds: Sequence[RoundMetrics], rows: Sequence[MetricRow], total_rounds: int | None
) -> list[dict[str, float | None]]:
    """The rows alert rules read: each metric row with the round's index, accuracy,
    losses and ``privacy_plan_ratio`` over ``total_rounds``, exactly as the run's own
    alert sink adds them (:func:`fedstrata.monitoring.live.extra_values`)."""
    return [{**row, **extra_values(m, total_rounds)} for m, row in zip(rounds, rows, strict=True)]


def default_catalogue(rules: Sequence[AlertRule] = DEFAULT_RULES) -> Catalogue:
    """The project's twelve metrics and ``rules`` (default: the shipped alert rules)."""
    return Catalogue(
        metrics=tuple(METRICS),
        compute=federation_metrics,
        rules=tuple(rules),
        alerts=evaluate,
    )
