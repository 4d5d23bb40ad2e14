"""The :class:`Alert` event (re-exported by :mod:`fedstrata.monitoring.alerts`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Alert"]


@dataclass(frozen=True)
class Alert:
    """A rule fired at a round (a metric event: the run store keeps it).

    Attributes:
        rule: the rule's name.
        round: the round at which the streak reached ``for_rounds``.
        value: the metric's value in that round.
        severity: the rule's severity.
        message: a human-readable statement (rule, condition, value, round).
    """

    rule: str
    round: int
    value: float
    severity: str
    message: str
