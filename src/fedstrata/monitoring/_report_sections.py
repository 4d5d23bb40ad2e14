"""The report's sections as an operator reads them: the twelve federation metrics in
their four groups, then one section per feature the run used (privacy, compression).

Each builder returns a :class:`Section`: its HTML (tables, notes, warnings) and the
:class:`~fedstrata.monitoring._plots.Panel` figures to draw in it. A series that is
constant (or has a single point) gets no panel: the group's table states its value;
a metric that does not apply says so. NumPy only: the report draws the panels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.payload import HEADER_SIZE
from fedstrata.monitoring._html import fmt_number, note, table
from fedstrata.monitoring._plots import Panel, varies
from fedstrata.monitoring.catalogue import GROUPS, METRICS, WINDOW, MetricDef
from fedstrata.monitoring.events import RoundMetrics

__all__ = [
    "GROUP_TITLES",
    "Section",
    "column",
    "compression_section",
    "metric_sections",
    "privacy_section",
]

Array = NDArray[np.float64]
GROUP_TITLES: Mapping[str, str] = {
    "communication": "Communication",
    "compute": "Compute",
    "quality": "Model quality",
    "reliability": "Reliability",
}
# the run's main figures (render_plots' sections) shown in each group's section
_MAIN_FIGURES: Mapping[str, tuple[str, ...]] = {
    "quality": ("Accuracy", "Loss"),
    "communication": ("Communication",),
    "compute": ("Round time",),
}
NOISE_DOMINATES = 1.0
"""The noise multiplier (noise std over the clip norm) from which the central noise is
at least as large as any one clipped update: where accuracy falls then, the report warns."""
SIGMA = "\N{GREEK SMALL LETTER SIGMA}"


@dataclass
class Section:
    """A report section: its title, HTML parts, panels, and the main figures it shows."""

    title: str
    parts: list[str] = field(default_factory=list)
    panels: list[Panel] = field(default_factory=list)
    main: tuple[str, ...] = ()


def column(values: Sequence[float | int | None]) -> Array:
    """``values`` as floats, None and non-finite values as NaN."""
    out = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    out[~np.isfinite(out)] = np.nan
    return out


def _summary_cells(values: Array, unit: str) -> tuple[str, str, str, str]:
    """(last, mean, range, note) of a metric's series."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "—", "—", "—", "not applicable (docs/monitoring.md says when)"
    last = fmt_number(float(finite[-1]), unit)
    mean = fmt_number(float(finite.mean()), unit)
    span = f"{fmt_number(float(finite.min()))} - {fmt_number(float(finite.max()))}"
    return last, mean, span, "" if varies(values) else "constant: no figure"


def _metric_panel(d: MetricDef, x: Array, values: Array, section: str) -> Panel:
    return Panel(section, f"{d.title} vs round", "round", d.unit, x, {d.title: values})


def metric_sections(
    rounds: Sequence[RoundMetrics], rows: Sequence[Mapping[str, float | None]]
) -> list[Section]:
    """The four groups of the twelve metrics: a table of each metric's last value,
    mean and range with its formula, and a figure for each one that varies."""
    x = column([m.round_idx for m in rounds])
    sections = []
    for group in GROUPS:
        title = GROUP_TITLES[group]
        sec = Section(title, main=_MAIN_FIGURES.get(group, ()))
        cells = []
        for d in (d for d in METRICS if d.group == group):
            values = column([row[d.key] for row in rows])
            cells.append((d.title, *_summary_cells(values, d.unit), d.formula))
            if varies(values):
                sec.panels.append(_metric_panel(d, x, values, title))
        header = ("metric", "last", "mean", "min - max", "note", "formula")
        sec.parts.append(table(header, cells, numeric={1, 2, 3}))
        if group == "quality":
            sec.parts.append(note(f"Windowed over the evaluated rounds of the last {WINDOW}."))
            _task_metrics(rounds, x, sec)
        sections.append(sec)
    return sections


def _task_metrics(rounds: Sequence[RoundMetrics], x: Array, sec: Section) -> None:
    """The task's own metrics (``test_<name>``): a figure each where they vary."""
    keys = sorted({k for m in rounds for k in m.extras})
    flat = []
    for key in keys:
        values = column([m.extras.get(key) for m in rounds])
        if varies(values):
            sec.panels.append(Panel(sec.title, f"{key} vs round", "round", key, x, {key: values}))
        elif np.isfinite(values).any():
            flat.append((key, fmt_number(float(values[np.isfinite(values)][-1]))))
    if flat:
        sec.parts.append(table(("task metric (constant)", "value"), flat, numeric={1}))


def _planned_rounds(config: Mapping[str, object], done: int) -> int:
    rounds = config.get("rounds")
    planned = rounds.get("rounds") if isinstance(rounds, Mapping) else None
    return max(planned, done) if isinstance(planned, int) and planned > 0 else done


def privacy_section(
    rounds: Sequence[RoundMetrics],
    rows: Sequence[Mapping[str, float | None]],
    config: Mapping[str, object],
) -> Section | None:
    """Central DP: ε spent against an even split of the budget over the planned rounds,
    the noise multiplier and the allocator's stage, and a warning where accuracy fell
    while noise dominated (None without central DP)."""
    recs = [m.privacy for m in rounds]
    if all(r is None for r in recs):
        return None
    sec = Section("Privacy")
    x = column([m.round_idx for m in rounds])
    spent = column([None if r is None else r.epsilon_spent for r in recs])
    last = next(r for r in reversed(recs) if r is not None)
    budget = last.epsilon_spent + last.epsilon_remaining
    planned = _planned_rounds(config, len(rounds))
    plan = budget * (x + 1) / planned
    sec.panels.append(
        Panel("Privacy", "ε spent vs plan", "round", "ε", x,
              {"ε spent": spent, f"even split of ε={budget:.3g} over {planned} rounds": plan})
    )  # fmt: skip
    sigma = column([None if r is None else r.noise_multiplier for r in recs])
    stage = column([None if r is None else r.stage for r in recs])
    for name, values in (
        ("noise multiplier \N{GREEK SMALL LETTER SIGMA}", sigma),
        ("allocator stage", stage),
    ):
        if varies(values):
            sec.panels.append(
                Panel("Privacy", f"{name} vs round", "round", name, x, {name: values})
            )
    cells = [
        ("budget ε", fmt_number(budget)), ("ε spent", fmt_number(last.epsilon_spent)),
        ("ε remaining", fmt_number(last.epsilon_remaining)),
        (f"{SIGMA} (last round)", fmt_number(last.noise_multiplier)),
        ("stage (last round)", str(last.stage)),
    ]  # fmt: skip
    sec.parts.append(table(("privacy", "value"), cells, numeric={1}))
    sec.parts.extend(_privacy_warnings(x, spent, plan, sigma, rows))
    return sec


def _privacy_warnings(
    x: Array, spent: Array, plan: Array, sigma: Array, rows: Sequence[Mapping[str, float | None]]
) -> list[str]:
    out = []
    ahead = [int(r) for r, s, p in zip(x, spent, plan, strict=True) if s > p * (1 + 1e-6)]
    if ahead:
        out.append(note(f"ε was spent ahead of the even plan in {len(ahead)} rounds "
                        f"(first: round {ahead[0]}).", "warn"))  # fmt: skip
    speed = column([row["convergence_speed"] for row in rows])
    falling = [
        int(r) for r, v, s in zip(x, speed, sigma, strict=True)
        if v < 0 and s >= NOISE_DOMINATES
    ]  # fmt: skip
    if falling:
        shown = ", ".join(str(r) for r in falling[:10]) + (" …" if len(falling) > 10 else "")
        out.append(note(
            f"Accuracy fell over the last {WINDOW} rounds at rounds {shown} while the noise "
            f"multiplier {SIGMA} was ≥ {NOISE_DOMINATES:g} (the noise is at least as large "
            "as any one clipped update): the noise may be drowning the signal. A larger "
            f"cohort, a smaller {SIGMA} or an earlier stop would spend the budget better.",
            "warn"))  # fmt: skip
    return out


def compression_section(rounds: Sequence[RoundMetrics], num_params: int | None) -> Section | None:
    """Up- and downlink compression against dense float32, and the clients' version lag
    (FedBuff's staleness); None when neither direction was compressed nor lagged."""
    codecs = [m.codec for m in rounds]
    if all(c is None for c in codecs):
        return None
    x = column([m.round_idx for m in rounds])
    up = column([None if c is None else c.uplink_ratio for c in codecs])
    dense = None if not num_params else HEADER_SIZE + 4 * num_params
    down = column([
        None if c is None or dense is None or c.downlink_bytes_per_client <= 0
        else dense / c.downlink_bytes_per_client
        for c in codecs
    ])  # fmt: skip
    lag = column([None if m.fedbuff is None else m.fedbuff.staleness_mean for m in rounds])
    lag_max = column([None if m.fedbuff is None else m.fedbuff.staleness_max for m in rounds])
    compressed = np.nanmax(np.concatenate([up, down, [1.0]])) > 1.01
    if not compressed and not np.isfinite(lag).any():
        return None
    sec = Section("Compression")
    series = (("uplink ratio", up), ("downlink ratio", down), ("version lag (mean)", lag))
    for name, values in series:
        if varies(values):
            sec.panels.append(Panel("Compression", f"{name} vs round", "round", name, x,
                                    {name: values}))  # fmt: skip
    cells = [
        ("uplink ratio (dense / sent)", *_mean_last(up)),
        ("downlink ratio (dense / sent)", *_mean_last(down)),
        ("clients' version lag (mean)", *_mean_last(lag)),
        ("clients' version lag (max)", *_mean_last(lag_max)),
    ]
    sec.parts.append(table(("compression", "mean", "last round"), cells, numeric={1, 2}))
    if not np.isfinite(lag).any():
        sec.parts.append(note("Synchronous rounds: every client trains on the current model."))
    return sec


def _mean_last(values: Array) -> tuple[str, str]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "—", "—"
    return fmt_number(float(finite.mean())), fmt_number(float(finite[-1]))
