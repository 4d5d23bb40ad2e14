"""Alert rules over the per-round federation metrics (Issue 16 part 4).

An :class:`AlertRule` names a metric of a round's row (a key of
:data:`fedstrata.monitoring.catalogue.METRICS`, or one of :data:`EXTRA_KEYS`), a
comparison and a threshold, and how many consecutive rounds the condition must hold
before the alert fires (``for_rounds``, hysteresis against a single noisy round).

Semantics, per rule, over the rows in round order:

* a row whose value is None (not measured, not applicable) is skipped: it neither
  extends nor breaks a streak;
* ``>``, ``>=``, ``<``, ``<=`` compare the value with ``threshold``; ``falling``
  (``rising``) holds when the value is below (above) the previous measured value by
  more than ``threshold`` (0: any drop);
* the streak counts consecutive measured rows where the condition holds; the alert
  fires once, at the row where the streak reaches ``for_rounds``, and may fire again
  only after a measured row where the condition fails (once per firing, not every round).

:func:`evaluate` is the batch form; :class:`AlertEvaluator` the online one a run uses
(:class:`~fedstrata.monitoring.alert_sink.AlertMonitor`): feeding rows one by one
gives the same alerts. :func:`prometheus_rules_yaml` writes the rules as a Prometheus
alerting-rules file over the exporter's gauges (:mod:`fedstrata.monitoring.prometheus`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedstrata.errors import ConfigError
from fedstrata.monitoring._alert import Alert
from fedstrata.monitoring.catalogue import METRICS

__all__ = [
    "DEFAULT_RULES",
    "EXTRA_KEYS",
    "METRIC_KEYS",
    "RULES_FILE",
    "Alert",
    "AlertEvaluator",
    "AlertRule",
    "evaluate",
    "prometheus_rules_yaml",
]

METRIC_KEYS: tuple[str, ...] = tuple(d.key for d in METRICS)
"""The twelve federation metrics' keys (:data:`~fedstrata.monitoring.catalogue.METRICS`)."""

EXTRA_KEYS: tuple[str, ...] = ("accuracy", "loss", "train_loss", "privacy_plan_ratio")
"""Other keys a rule may watch: the round's test accuracy and loss, its mean training
loss, and ``privacy_plan_ratio``: ε spent / ε the plan allows by this round (the budget
paced evenly over the configured rounds; > 1: ahead of plan)."""

Op = Literal[">", ">=", "<", "<=", "falling", "rising"]
Severity = Literal["info", "warning", "critical"]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}  # fmt: skip
_WORDS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below"}


class AlertRule(BaseModel):
    """One alert rule; see the module docstring for the semantics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="alert name (a Prometheus alertname: letters, digits, _)",
    )
    metric: str = Field(description="the watched key (a federation metric or an extra key)")
    op: Op = Field(description="> >= < <= compare with threshold; falling/rising: vs last")
    threshold: float = Field(0.0, allow_inf_nan=False, description="the compared value")
    for_rounds: int = Field(1, ge=1, le=10_000, description="consecutive rounds to fire")
    severity: Severity = Field("warning", description="info, warning or critical")
    summary: str = Field("", description="what the alert means (default: generated)")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRIC_KEYS and value not in EXTRA_KEYS:
            known = ", ".join((*METRIC_KEYS, *EXTRA_KEYS))
            raise ValueError(f"metric {value!r} is not a federation metric (one of {known})")
        return value

    @model_validator(mode="after")
    def _trend_threshold(self) -> AlertRule:
        if self.op in ("falling", "rising") and self.threshold < 0:
            raise ValueError(
                f"threshold={self.threshold} of a {self.op} rule must be >= 0 (the least change)"
            )
        return self

    def holds(self, value: float, previous: float | None) -> bool | None:
        """Whether the condition holds for ``value`` (None: undecidable yet, the first
        measured value of a trend rule)."""
        if self.op in _COMPARE:
            return _COMPARE[self.op](value, self.threshold)
        if previous is None:
            return None
        change = value - previous
        return change < -self.threshold if self.op == "falling" else change > self.threshold

    def describe(self) -> str:
        """A one-line statement of the condition."""
        rounds = f"for {self.for_rounds} rounds" if self.for_rounds > 1 else "in a round"
        if self.op in _WORDS:
            return f"{self.metric} {_WORDS[self.op]} {self.threshold:g} {rounds}"
        by = f" by more than {self.threshold:g}" if self.threshold else ""
        return f"{self.metric} {self.op}{by} {rounds}"


DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(name="SyncShareHigh", metric="sync_share", op=">", threshold=0.7, for_rounds=3,
              summary="synchronisation takes over 70% of round time"),
    AlertRule(name="DeviceUtilizationLow", metric="device_utilization", op="<", threshold=0.6,
              for_rounds=3, summary="devices are idle over 40% of the round"),
    AlertRule(name="CompletionRateLow", metric="completion_rate", op="<", threshold=0.95,
              for_rounds=2, summary="over 5% of selected clients do not complete"),
    AlertRule(name="PrivacyAheadOfPlan", metric="privacy_plan_ratio", op=">", threshold=1.0,
              severity="critical", summary="epsilon is spent faster than the plan allows"),
    AlertRule(name="AccuracyFalling", metric="accuracy", op="falling", for_rounds=3,
              summary="test accuracy fell in 3 consecutive evaluations"),
)  # fmt: skip
"""The shipped rules (``monitoring.alerts`` defaults, ``prometheus_rules.yml``)."""

RULES_FILE = Path(__file__).with_name("prometheus_rules.yml")
"""The shipped Prometheus rules file: :func:`prometheus_rules_yaml` of :data:`DEFAULT_RULES`
(``fedstrata alerts export`` writes it for your own rules)."""


@dataclass
class _RuleState:
    streak: int = 0
    firing: bool = False
    previous: float | None = None


class AlertEvaluator:
    """Evaluates rules online, one round's row at a time (see the module docstring).

    Raises:
        ConfigError: two rules share a name.
    """

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        names = [r.name for r in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(
                f"monitoring.alerts: rule names must be unique; repeated: {duplicates}"
            )
        self.rules = tuple(rules)
        self._states = [_RuleState() for _ in self.rules]
        self._next_round = 0

    def push(self, row: Mapping[str, float | None]) -> list[Alert]:
        """Feed the next round's row (``row["round"]``, if present, is its index);
        returns the alerts that fire at it."""
        round_idx = _round_of(row, self._next_round)
        self._next_round = round_idx + 1
        fired = []
        for rule, state in zip(self.rules, self._states, strict=True):
            alert = _step(rule, state, row.get(rule.metric), round_idx)
            if alert is not None:
                fired.append(alert)
        return fired

    def firing(self) -> list[str]:
        """Names of the rules firing now (their condition still holds)."""
        return [r.name for r, s in zip(self.rules, self._states, strict=True) if s.firing]


def _round_of(row: Mapping[str, float | None], default: int) -> int:
    value = row.get("round")
    return default if value is None else int(value)


def _step(rule: AlertRule, state: _RuleState, value: float | None, round_idx: int) -> Alert | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    holds = rule.holds(float(value), state.previous)
    state.previous = float(value)
    if holds is None:
        return None
    if not holds:
        state.streak, state.firing = 0, False
        return None
    state.streak += 1
    if state.firing or state.streak < rule.for_rounds:
        return None
    state.firing = True
    message = f"{rule.name}: {rule.describe()} (value {value:.4g} at round {round_idx})"
    if rule.summary:
        message += f": {rule.summary}"
    return Alert(rule.name, round_idx, float(value), rule.severity, message)


def evaluate(
    rules: Sequence[AlertRule], rows: Sequence[Mapping[str, float | None]]
) -> list[Alert]:
    """Every alert ``rules`` fire over ``rows`` (one row per round, in order), in round
    order (rules in their order within a round).

    Raises:
        ConfigError: two rules share a name.
    """
    evaluator = AlertEvaluator(rules)
    return [alert for row in rows for alert in evaluator.push(row)]


def _expr(rule: AlertRule, gauge: str, round_interval_s: float) -> str:
    if rule.op in _COMPARE:
        return f"{gauge} {rule.op} {rule.threshold:g}"
    before = f"({gauge} offset {_duration(round_interval_s)})"
    by = f" {'-' if rule.op == 'falling' else '+'} {rule.threshold:g}" if rule.threshold else ""
    return f"{gauge} {'<' if rule.op == 'falling' else '>'} {before}{by}"


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def prometheus_rules_yaml(
    rules: Sequence[AlertRule], *, round_interval_s: float = 60.0, group: str = "fedstrata"
) -> str:
    """A Prometheus alerting-rules file for ``rules`` over the exporter's gauges
    (``fedstrata_<metric>``, labels ``run``, ``tier``, ``node``).

    Prometheus evaluates over time, not rounds: ``for_rounds`` becomes ``for:`` of
    ``(for_rounds - 1) * round_interval_s`` (a trend rule compares with the value one
    interval earlier), so set ``round_interval_s`` near the federation's round time.

    Raises:
        ConfigError: ``round_interval_s`` is not positive, or rule names repeat.
    """
    if not (math.isfinite(round_interval_s) and round_interval_s > 0):
        raise ConfigError(f"round_interval_s={round_interval_s!r} must be a positive number")
    AlertEvaluator(rules)  # checks unique names
    entries = []
    for rule in rules:
        entry: dict[str, object] = {
            "alert": rule.name,
            "expr": _expr(rule, f"fedstrata_{rule.metric}", round_interval_s),
        }
        if rule.for_rounds > 1:
            entry["for"] = _duration((rule.for_rounds - 1) * round_interval_s)
        entry["labels"] = {"severity": rule.severity}
        summary = rule.summary or rule.describe()
        entry["annotations"] = {
            "summary": summary,
            "description": f"{rule.describe()} (run {{{{ $labels.run }}}}, "
            f"{{{{ $labels.tier }}}} {{{{ $labels.node }}}}; value {{{{ $value }}}})",
        }
        entries.append(entry)
    doc = {"groups": [{"name": group, "rules": entries}]}
    header = "# Generated by fedstrata (monitoring.alerts.prometheus_rules_yaml); do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=1000)
