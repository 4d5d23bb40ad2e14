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
    rounds: Sequence[RoundMetrics],
    rows: Sequence[MetricRow],
    plan: Callable[[int], float | None],
) -> list[dict[str, float | None]]:
    """The rows alert rules read: each metric row with the round's index, test accuracy
    and loss, training loss and ``privacy_plan_ratio`` (ε spent over ``plan(round)``,
    the ε the plan allows by then; None without DP or a plan)."""
    out = []
    for m, row in zip(rounds, rows, strict=True):
        allowed = plan(m.round_idx)
        spent = None if m.privacy is None else m.privacy.epsilon_spent
        ratio = None if spent is None or not allowed else spent / allowed
        extra = {"round": float(m.round_idx), "accuracy": m.accuracy, "loss": m.loss,
                 "train_loss": m.train_loss, "privacy_plan_ratio": ratio}  # fmt: skip
        out.append({**row, **extra})
    return out


def default_catalogue(rules: Sequence[AlertRule] = DEFAULT_RULES) -> Catalogue:
    """The project's twelve metrics and ``rules`` (default: the shipped alert rules)."""
    return Catalogue(
        metrics=tuple(METRICS),
        compute=federation_metrics,
        rules=tuple(rules),
        alerts=evaluate,
    )
