"""The report's Resilience section (issue 15 part 6): checkpoint times per tier and
center failovers, from the rounds' :class:`~fedstrata.core.metrics.ResilienceStats`.

Present only when the run recorded them (``checkpoint.enabled``, or a center node with
``failover.enabled``). A series with fewer than two distinct values gets no panel: the
table states it. NumPy only: the report draws the panels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedstrata.core.metrics import ResilienceStats
from fedstrata.monitoring._html import fmt_number, note, table
from fedstrata.monitoring._plots import Panel, varies
from fedstrata.monitoring._report_sections import Array, Section, column
from fedstrata.monitoring.events import RoundMetrics

__all__ = ["RESILIENCE_SECTION", "resilience_section"]

RESILIENCE_SECTION = "Resilience"
_SERIES = (
    ("memory tier save", "ckpt_memory_s"),
    ("disk tier save", "ckpt_disk_s"),
    ("object tier save", "ckpt_object_s"),
    ("on the round's path", "ckpt_critical_s"),
)


def _cells(label: str, values: Array) -> tuple[str, str, str, str]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return label, "0", "—", "—"
    median, worst = float(np.median(finite)), float(finite.max())
    return label, f"{finite.size:,}", fmt_number(median, "s"), fmt_number(worst, "s")


def resilience_section(rounds: Sequence[RoundMetrics]) -> Section | None:
    """Checkpoint save times per tier, the critical-path (or commit) time and each
    failover with its recovery and checkpoint load (None: no such records)."""
    recs: list[ResilienceStats | None] = [m.resilience for m in rounds]
    if all(r is None for r in recs):
        return None
    sec = Section(RESILIENCE_SECTION)
    x = column([m.round_idx for m in rounds])
    series = {
        label: column([None if r is None else getattr(r, name) for r in recs])
        for label, name in _SERIES
    }
    sec.parts.append(
        table(
            ("checkpoint time", "rounds", "median", "max"),
            [_cells(label, values) for label, values in series.items()],
            numeric={1, 2, 3},
        )
    )
    shown = {k: v for k, v in series.items() if np.isfinite(v).any()}
    if any(varies(v) for v in shown.values()):
        sec.panels.append(
            Panel(RESILIENCE_SECTION, "checkpoint time vs round", "round", "seconds", x, shown,
                  kind="scatter")
        )  # fmt: skip
    sec.parts.extend(_failovers(rounds))
    return sec


def _failovers(rounds: Sequence[RoundMetrics]) -> list[str]:
    """The failovers' table, or a note that there were none (a center node's run)."""
    counts = [m.resilience.failovers for m in rounds if m.resilience is not None]
    known = [c for c in counts if c is not None]
    if not known:
        return []  # a simulation: no center to lose
    resumed = [
        (str(m.round_idx), fmt_number(r.recovery_s, "s"), fmt_number(r.restore_s, "s"))
        for m in rounds
        if (r := m.resilience) is not None and r.restore_s is not None
    ]
    parts = [note(f"center failovers in the run so far: {max(known)}")]
    if resumed:
        header = ("first round served", "recovery (last renewal seen → serving)", "load")
        parts.append(table(header, resumed, numeric={0, 1, 2}))
    return parts
