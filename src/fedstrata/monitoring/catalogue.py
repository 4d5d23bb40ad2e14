"""The twelve federation metrics: four groups of three, each with its formula.

=============  =====================================================================
group          metrics
=============  =====================================================================
communication  ``compression_ratio``, ``sync_share``, ``bandwidth_utilization``
compute        ``device_utilization``, ``round_time_s``, ``flop_efficiency``
quality        ``convergence_speed``, ``accuracy_fluctuation``, ``privacy_spent_eps``
reliability    ``completion_rate``, ``recovery_time_s``, ``contention``
=============  =====================================================================

:func:`federation_metrics` computes them per round from the engine's typed events
(:class:`~fedstrata.monitoring.RoundMetrics` and its records, above all
:class:`~fedstrata.core.metrics.SystemStats`), so the simulator and the runtime, a
finished run store and a live one, give the same numbers from the same figures. A
metric is ``None`` where it does not apply (no central DP: no ε) or where the figure it
needs was not recorded (the runtime knows no device peak FLOP/s). ``docs/monitoring.md``
gives each formula, what it means and when it is ``None``.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fedstrata.monitoring.events import RoundMetrics

__all__ = ["GROUPS", "METRICS", "WINDOW", "Group", "MetricDef", "federation_metrics"]

Group = Literal["communication", "compute", "quality", "reliability"]
GROUPS: tuple[Group, ...] = ("communication", "compute", "quality", "reliability")
WINDOW = 5
"""Rounds (the current one and the four before) the quality metrics look back over."""


@dataclass(frozen=True)
class MetricDef:
    """One federation metric: its key, group, title, unit, formula and direction."""

    key: str
    group: Group
    title: str
    unit: str
    formula: str
    better: Literal["higher", "lower"]


METRICS: tuple[MetricDef, ...] = (
    MetricDef("compression_ratio", "communication", "Compression ratio", "x",
              "system.dense_bytes / (bytes_up + bytes_down)", "higher"),
    MetricDef("sync_share", "communication", "Sync-latency share", "fraction",
              "(downlink_s + uplink_s) / sim_round_s", "lower"),
    MetricDef("bandwidth_utilization", "communication", "Bandwidth utilization", "fraction",
              "system.link_bytes / system.link_capacity_bytes", "higher"),
    MetricDef("device_utilization", "compute", "Device utilization", "fraction",
              "system.busy_s / (system.devices * sim_round_s)", "higher"),
    MetricDef("round_time_s", "compute", "Round time", "s", "sim_round_s", "lower"),
    MetricDef("flop_efficiency", "compute", "FLOP efficiency", "fraction",
              "system.flops / (system.peak_flops * sim_round_s)", "higher"),
    MetricDef("convergence_speed", "quality", "Convergence speed", "accuracy/round",
              f"(acc[last] - acc[first]) / (last - first) over the evaluated rounds of "
              f"the last {WINDOW}", "higher"),
    MetricDef("accuracy_fluctuation", "quality", "Accuracy fluctuation", "accuracy",
              f"pstdev(acc[i+1] - acc[i]) over the evaluated rounds of the last {WINDOW}",
              "lower"),
    MetricDef("privacy_spent_eps", "quality", "Privacy loss (ε spent)", "ε",
              "privacy.epsilon_spent", "lower"),
    MetricDef("completion_rate", "reliability", "Task completion rate", "fraction",
              "clients_completed / clients_selected", "higher"),
    MetricDef("recovery_time_s", "reliability", "Failure-recovery time", "s",
              "resilience.recovery_s (a center failover), else (first accepted update "
              "after the round's first failure) - system.failure_at_s",
              "lower"),
    MetricDef("contention", "reliability", "Resource contention", "fraction",
              "system.contention_s / system.transfer_s", "lower"),
)  # fmt: skip


def _ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``; None when either is unknown or NaN, or ``den`` is not > 0."""
    if num is None or den is None or math.isnan(num) or math.isnan(den) or den <= 0:
        return None
    return num / den


def _communication(m: RoundMetrics) -> dict[str, float | None]:
    s, wire = m.system, m.bytes_up + m.bytes_down
    legs = m.downlink_s + m.uplink_s + m.compute_s  # all zero: the legs were not measured
    return {
        "compression_ratio": _ratio(None if s is None else s.dense_bytes, wire),
        "sync_share": _ratio(m.downlink_s + m.uplink_s, m.sim_round_s) if legs > 0 else None,
        "bandwidth_utilization": None
        if s is None
        else _ratio(s.link_bytes, s.link_capacity_bytes),
    }


def _compute(m: RoundMetrics) -> dict[str, float | None]:
    s = m.system
    return {
        "device_utilization": None if s is None else _ratio(s.busy_s, s.devices * m.sim_round_s),
        "round_time_s": m.sim_round_s,
        "flop_efficiency": None
        if s is None or s.peak_flops is None
        else _ratio(s.flops, s.peak_flops * m.sim_round_s),
    }


def _evaluated(rounds: Sequence[RoundMetrics], i: int) -> list[tuple[int, float]]:
    """(round, accuracy) of the evaluated rounds among the last :data:`WINDOW` up to ``i``."""
    low = rounds[i].round_idx - WINDOW + 1
    points: list[tuple[int, float]] = []
    for m in rounds[max(0, i - WINDOW + 1) : i + 1]:
        if m.round_idx >= low and m.accuracy is not None:
            points.append((m.round_idx, m.accuracy))
    return points


def _quality(rounds: Sequence[RoundMetrics], i: int) -> dict[str, float | None]:
    m, points = rounds[i], _evaluated(rounds, i)
    speed = fluct = None
    if len(points) >= 2:
        (r0, a0), (r1, a1) = points[0], points[-1]
        speed = (a1 - a0) / (r1 - r0)
    if len(points) >= 3:
        deltas = [b[1] - a[1] for a, b in itertools.pairwise(points)]
        fluct = statistics.pstdev(deltas)
    return {
        "convergence_speed": speed,
        "accuracy_fluctuation": fluct,
        "privacy_spent_eps": None if m.privacy is None else m.privacy.epsilon_spent,
    }


def _next_accepts(rounds: Sequence[RoundMetrics]) -> list[float | None]:
    """For each round, the first accepted arrival of the first later round that has one."""
    out: list[float | None] = [None] * len(rounds)
    later: float | None = None
    for i in range(len(rounds) - 1, -1, -1):
        out[i] = later
        s = rounds[i].system
        if s is not None and s.first_accept_s is not None:
            later = s.first_accept_s
    return out


def _reliability(m: RoundMetrics, next_accept: float | None) -> dict[str, float | None]:
    s = m.system
    recovery = None
    if s is not None and s.failure_at_s is not None:
        recovered = s.recovered_at_s if s.recovered_at_s is not None else next_accept
        recovery = None if recovered is None else recovered - s.failure_at_s
    r = m.resilience
    if r is not None and r.recovery_s is not None:  # the center failed: no one was served
        recovery = r.recovery_s
    return {
        "completion_rate": _ratio(m.clients_completed, m.clients_selected),
        "recovery_time_s": recovery,
        "contention": None if s is None else _ratio(s.contention_s, s.transfer_s),
    }


def federation_metrics(rounds: Sequence[RoundMetrics]) -> list[dict[str, float | None]]:
    """The twelve metrics of each round, keyed by :attr:`MetricDef.key` in
    :data:`METRICS` order; ``None`` where a metric does not apply.

    ``rounds`` are one run's rounds in order (as :meth:`RunStore.rounds` returns them):
    the quality metrics look back over the last :data:`WINDOW` rounds, and a failure
    not recovered in its own round is recovered by the first later round with an
    accepted update.
    """
    rows: list[dict[str, float | None]] = []
    next_accepts = _next_accepts(rounds)
    for i, m in enumerate(rounds):
        values = {**_communication(m), **_compute(m), **_quality(rounds, i)}
        values.update(_reliability(m, next_accepts[i]))
        rows.append({d.key: values[d.key] for d in METRICS})
    return rows
