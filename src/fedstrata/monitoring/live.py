"""Rows of the federation metrics as a run goes, and the sink that checks alert rules.

A row is a round's twelve metrics (:func:`~fedstrata.monitoring.catalogue.federation_metrics`)
plus the keys of :data:`~fedstrata.monitoring.alerts.EXTRA_KEYS` and ``round``.
:class:`LiveRows` computes the newest round's row from the last
:data:`~fedstrata.monitoring.catalogue.WINDOW` rounds (the catalogue looks back no
further), so a live sink costs the same in round 1 and round 1,000; :func:`alert_rows`
is the batch form over a finished run (the same numbers, except ``recovery_time_s``, which
a later round may settle).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

from fedstrata.monitoring.alerts import AlertEvaluator, AlertRule
from fedstrata.monitoring.catalogue import WINDOW, federation_metrics
from fedstrata.monitoring.events import MetricEvent, RoundMetrics
from fedstrata.monitoring.sinks import Sink

__all__ = ["AlertMonitor", "LiveRows", "alert_rows", "extra_values", "privacy_plan_ratio"]

logger = logging.getLogger(__name__)

Row = dict[str, float | None]


def privacy_plan_ratio(metrics: RoundMetrics, total_rounds: int | None) -> float | None:
    """ε spent / ε the plan allows after this round: the budget (spent + remaining)
    paced evenly over ``total_rounds``. None without central DP or a known round count."""
    p = metrics.privacy
    if p is None or total_rounds is None or total_rounds <= 0:
        return None
    budget = p.epsilon_spent + p.epsilon_remaining
    if budget <= 0:
        return None
    planned = budget * min(1.0, (metrics.round_idx + 1) / total_rounds)
    return p.epsilon_spent / planned


def extra_values(metrics: RoundMetrics, total_rounds: int | None) -> Row:
    """The round's values of the non-catalogue keys a rule may watch, and ``round``."""
    return {
        "round": float(metrics.round_idx),
        "accuracy": metrics.accuracy,
        "loss": metrics.loss,
        "train_loss": metrics.train_loss,
        "privacy_plan_ratio": privacy_plan_ratio(metrics, total_rounds),
    }


def alert_rows(rounds: Sequence[RoundMetrics], total_rounds: int | None = None) -> list[Row]:
    """One row per round of a run (the rows :func:`~fedstrata.monitoring.alerts.evaluate`
    takes); ``total_rounds``: the configured rounds (for ``privacy_plan_ratio``)."""
    rows = federation_metrics(rounds)
    return [{**row, **extra_values(m, total_rounds)} for row, m in zip(rows, rounds, strict=True)]


class LiveRows:
    """The newest round's row, from a window of the last rounds (see the module docstring).

    Args:
        total_rounds: the configured rounds (for ``privacy_plan_ratio``), or None.
    """

    def __init__(self, total_rounds: int | None = None) -> None:
        self.total_rounds = total_rounds
        self._recent: deque[RoundMetrics] = deque(maxlen=WINDOW)

    def add(self, metrics: RoundMetrics) -> Row:
        """Add the next round; returns its row."""
        self._recent.append(metrics)
        row = federation_metrics(list(self._recent))[-1]
        return {**row, **extra_values(metrics, self.total_rounds)}


class AlertMonitor:
    """A sink that checks alert rules after every round.

    An alert that fires is logged at WARNING (once per firing, not every round it
    holds) and emitted, as an :class:`~fedstrata.monitoring.alerts.Alert` event, to
    ``forward`` (the run store keeps it; an exporter counts it). Other events are ignored.

    Args:
        rules: the rules (``monitoring.alerts``).
        forward: sinks that receive the alerts.
        total_rounds: the configured rounds (for ``privacy_plan_ratio``).

    Raises:
        ConfigError: rule names repeat.
    """

    def __init__(
        self,
        rules: Sequence[AlertRule],
        forward: Sequence[Sink] = (),
        total_rounds: int | None = None,
    ) -> None:
        self._evaluator = AlertEvaluator(rules)
        self._rows = LiveRows(total_rounds)
        self._forward = tuple(forward)
        self.fired: list[str] = []

    def emit(self, event: MetricEvent) -> None:
        """Check the rules on a round's metrics; forward what fires."""
        if not isinstance(event, RoundMetrics):
            return
        for alert in self._evaluator.push(self._rows.add(event)):
            logger.warning(
                "alert (%s) at round %d: %s", alert.severity, alert.round, alert.message
            )
            self.fired.append(alert.rule)
            for sink in self._forward:
                sink.emit(alert)

    def close(self) -> None:
        """Nothing to release (the forwarded sinks are closed by their owner)."""

    def __repr__(self) -> str:
        return f"AlertMonitor({len(self._evaluator.rules)} rules)"
