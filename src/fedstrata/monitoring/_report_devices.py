"""The report's device and tier sections: the scheduler's figures, each client's
participation and its fairness (is a selector starving slow clients?), and the
tiers' ingress. NumPy only: the report draws the panels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedstrata.monitoring._html import fmt_number, note, table
from fedstrata.monitoring._plots import Panel, varies
from fedstrata.monitoring._report_sections import Section, column
from fedstrata.monitoring.devices import DeviceStats, TierIngress
from fedstrata.monitoring.events import RoundMetrics

__all__ = ["STARVED_RATIO", "jain_index", "participation_section", "scheduling_section",
           "tiers_section"]  # fmt: skip

STARVED_RATIO = 0.5
"""The slowest quarter of clients selected less than this share of the fastest
quarter's selections is reported as starved."""


def jain_index(counts: Sequence[float] | np.ndarray) -> float:
    """Jain's fairness index of ``counts``: 1 when all equal, 1/n when one takes all."""
    x = np.asarray(counts, dtype=np.float64)
    square = float((x * x).sum())
    return float(x.sum() ** 2 / (x.size * square)) if x.size and square > 0 else 1.0


def scheduling_section(rounds: Sequence[RoundMetrics]) -> Section | None:
    """The work-allocating scheduler: devices' utilization, the time predictor's error,
    partial and dropped work (None without the scheduler)."""
    recs = [m.schedule for m in rounds]
    if all(r is None for r in recs):
        return None
    sec = Section("Scheduling")
    x = column([m.round_idx for m in rounds])

    def col(name: str) -> np.ndarray:
        return column([None if r is None else getattr(r, name) for r in recs])

    groups = (
        ("device utilization",
         {"mean": col("mean_utilization"), "least used": col("min_utilization")}),
        ("predictor error (MAPE)",
         {"this round": col("predictor_mape_last"),
          "cumulative": col("predictor_mape_cumulative")}),
        ("clients with partial / dropped work",
         {"partial": col("partial"), "dropped": col("dropped")}),
    )  # fmt: skip
    cells = []
    for title, series in groups:
        if any(varies(v) for v in series.values()):
            sec.panels.append(Panel("Scheduling", f"{title} vs round", "round", title, x, series))
        for label, values in series.items():
            finite = values[np.isfinite(values)]
            last = fmt_number(float(finite[-1])) if finite.size else "—"
            cells.append((f"{title}: {label}", last))
    sec.parts.append(table(("scheduler (last round)", "value"), cells, numeric={1}))
    return sec


def participation_section(devices: Sequence[DeviceStats]) -> Section | None:
    """Each client's selections and completions, their fairness, and whether the slow
    clients were left out (None when no per-device figures were recorded)."""
    if not devices:
        return None
    sec = Section("Participation")
    selected = np.array([d.rounds_selected for d in devices], dtype=np.float64)
    completed = np.array([d.rounds_completed for d in devices], dtype=np.float64)
    compute = np.array([d.mean_compute_s for d in devices], dtype=np.float64)
    cells = [
        ("clients ever selected", f"{len(devices):,}"),
        ("selections per client (min / median / max)",
         f"{selected.min():g} / {np.median(selected):g} / {selected.max():g}"),
        ("fairness of selections (Jain's index, 1 = equal)", f"{jain_index(selected):.3f}"),
        ("completions per selection", fmt_number(float(completed.sum() / selected.sum()))),
        ("straggler rounds (all clients)", f"{sum(d.straggler_rounds for d in devices):,}"),
    ]  # fmt: skip
    if varies(compute) and len(devices) >= 8:
        order = np.argsort(compute)
        quarter = max(len(devices) // 4, 1)
        fast, slow = selected[order[:quarter]].mean(), selected[order[-quarter:]].mean()
        cells.append(("selections: slowest vs fastest quarter", f"{slow:.3g} vs {fast:.3g}"))
        if slow < STARVED_RATIO * fast:
            sec.parts.append(note(
                f"The slowest quarter of clients (by training time) was selected {slow:.3g} "
                f"times on average, the fastest {fast:.3g}: the selector is starving slow "
                "clients, so their data count less in the model.", "warn"))  # fmt: skip
        x = compute
        sec.panels.append(Panel("Participation", "selections vs training time per client",
                                "mean training time (s)", "rounds selected", x,
                                {"clients": selected}, kind="scatter"))  # fmt: skip
    sec.parts.insert(0, table(("participation", "value"), cells, numeric={1}))
    if varies(selected):
        sec.panels.append(Panel("Participation", "rounds selected per client",
                                "rounds selected", "clients", selected, {"clients": selected},
                                kind="hist"))  # fmt: skip
    util = np.array([d.utilization_mean for d in devices], dtype=np.float64)
    if varies(util):
        sec.panels.append(Panel("Participation", "device utilization per client",
                                "mean utilization", "clients", util, {"clients": util},
                                kind="hist"))  # fmt: skip
    return sec


def tiers_section(rows: Sequence[TierIngress]) -> Section | None:
    """Bytes into each tier per round and each node's totals (None for a flat run)."""
    if not rows:
        return None
    sec = Section("Tiers")
    rounds = sorted({r.round_idx for r in rows})
    index = {r: i for i, r in enumerate(rounds)}
    tiers = sorted({r.tier for r in rows})
    series = {t: np.zeros(len(rounds)) for t in tiers}
    totals: dict[str, list[float]] = {}
    for r in rows:
        series[r.tier][index[r.round_idx]] += r.ingress_bytes
        acc = totals.setdefault(r.node, [0.0, 0.0, 0.0])
        acc[0] += r.ingress_bytes
        acc[1] += r.seconds
        acc[2] += 1
    x = np.array(rounds, dtype=np.float64)
    if any(varies(v) for v in series.values()):
        sec.panels.append(Panel("Tiers", "ingress bytes per tier vs round", "round", "bytes",
                                x, series))  # fmt: skip
    cells = [
        (node, f"{int(b):,}", fmt_number(s / n, "s")) for node, (b, s, n) in sorted(totals.items())
    ]
    sec.parts.append(table(("node", "ingress bytes (run)", "mean time to last input"), cells,
                           numeric={1, 2}))  # fmt: skip
    return sec
