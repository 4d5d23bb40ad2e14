"""Runs side by side: ``fedstrata compare RUN_DIR...`` writes one self-contained page.

A table puts each run's summary and the mean of each of the twelve federation metrics
(:mod:`fedstrata.monitoring.catalogue`) in a column per run; figures overlay the runs'
accuracy (by round and by simulated time), bytes and round time, and each metric whose
values differ across the runs or over the rounds (a metric constant and equal in every
run is only tabulated).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import ConfigError, MissingDependencyError
from fedstrata.monitoring._atomic import atomic_write_text
from fedstrata.monitoring._html import figures, fmt_number, note, page, section, table
from fedstrata.monitoring._plots import Panel, render_panels
from fedstrata.monitoring._report_sections import GROUP_TITLES, column
from fedstrata.monitoring.catalogue import METRICS, federation_metrics
from fedstrata.monitoring.events import RoundMetrics
from fedstrata.monitoring.runstore import RunStore

__all__ = ["COMPARE_FILE", "render_comparison", "write_comparison"]

COMPARE_FILE = "compare.html"


@dataclass(frozen=True)
class _Run:
    label: str
    rounds: list[RoundMetrics]
    rows: list[dict[str, float | None]]
    summary: dict[str, object]


def _load(run_dirs: Sequence[Path]) -> list[_Run]:
    runs: list[_Run] = []
    seen: dict[str, int] = {}
    for run_dir in run_dirs:
        with RunStore.open(run_dir) as store:
            rounds = store.rounds()
            try:
                summary = store.summary()
            except Exception:  # a run still going: its rounds are enough
                summary = {"status": "running or interrupted"}
        name = run_dir.resolve().name
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else f"{name} ({seen[name]})"
        runs.append(_Run(label, rounds, federation_metrics(rounds), summary))
    return runs


def _summary_table(runs: Sequence[_Run]) -> str:
    def value(run: _Run, key: str) -> str:
        v = run.summary.get(key)
        return fmt_number(v) if isinstance(v, int | float) else ("—" if v is None else str(v))

    keys = ("status", "rounds", "final_accuracy", "best_accuracy", "sim_time_s",
            "wall_time_s", "bytes_total", "clients_failed")  # fmt: skip
    rows = [(key.replace("_", " "), *(value(r, key) for r in runs)) for key in keys]
    for d in METRICS:
        means = []
        for run in runs:
            values = column([row[d.key] for row in run.rows])
            finite = values[np.isfinite(values)]
            means.append(fmt_number(float(finite.mean()), d.unit) if finite.size else "—")
        rows.append((f"{GROUP_TITLES[d.group]}: {d.title} (mean)", *means))
    header = ("", *(r.label for r in runs))
    return table(header, rows, numeric=set(range(1, len(runs) + 1)))


def _differs(series: Sequence[np.ndarray]) -> bool:
    """Whether the runs' finite values take more than one value in all."""
    finite = np.concatenate([s[np.isfinite(s)] for s in series]) if series else np.zeros(0)
    if finite.size < 2:
        return False
    return float(finite.max() - finite.min()) > 1e-9 * max(1.0, float(np.abs(finite).max()))


Column = Callable[[_Run], NDArray[np.float64]]


@dataclass(frozen=True)
class _Spec:
    title: str
    xlabel: str
    ylabel: str
    ys: Column
    xs: Column


def _by_round(run: _Run) -> NDArray[np.float64]:
    return column([m.round_idx for m in run.rounds])


def _field(name: str, run: _Run) -> NDArray[np.float64]:
    return column([getattr(m, name) for m in run.rounds])


def _bytes(run: _Run) -> NDArray[np.float64]:
    return column([m.bytes_up + m.bytes_down for m in run.rounds])


def _metric(key: str, run: _Run) -> NDArray[np.float64]:
    return column([row[key] for row in run.rows])


def _panel(spec: _Spec, runs: Sequence[_Run]) -> Panel | None:
    series = {r.label: spec.ys(r) for r in runs}
    if not _differs(list(series.values())):
        return None
    xs = {r.label: spec.xs(r) for r in runs}
    first = next(iter(xs.values()))
    return Panel("Runs", spec.title, spec.xlabel, spec.ylabel, first, series, small=False, xs=xs)


def _panels(runs: Sequence[_Run]) -> list[Panel]:
    accuracy = partial(_field, "accuracy")
    specs = [
        _Spec("Test accuracy vs round", "round", "accuracy", accuracy, _by_round),
        _Spec("Test accuracy vs simulated time", "simulated time (s)", "accuracy", accuracy,
              partial(_field, "sim_time_s")),
        _Spec("Bytes per round", "round", "bytes", _bytes, _by_round),
        *(_Spec(f"{d.title} vs round", "round", d.unit, partial(_metric, d.key), _by_round)
          for d in METRICS),
    ]  # fmt: skip
    built = (_panel(spec, runs) for spec in specs)
    return [p for p in built if p is not None]


def render_comparison(run_dirs: Sequence[Path]) -> str:
    """The comparison page of ``run_dirs``, as HTML text.

    Raises:
        ConfigError: fewer than two run directories.
        DataError: a run directory is missing or unreadable (names it).
    """
    if len(run_dirs) < 2:
        raise ConfigError(f"compare needs at least two run directories, got {len(run_dirs)}")
    runs = _load(run_dirs)
    try:
        drawn = figures(render_panels(_panels(runs), salt="fedstrata-compare"))
    except MissingDependencyError as exc:
        drawn = note(f"No figures: {exc}")
    body = [
        section("Runs", _summary_table(runs)),
        section("Side by side", drawn or note("Every figure would show identical runs.")),
    ]
    title = "fedstrata runs compared: " + ", ".join(r.label for r in runs)
    return page(title, [note("Columns are runs, in the order given.") + "\n", *body])


def write_comparison(run_dirs: Sequence[Path], out: Path) -> Path:
    """Write :func:`render_comparison` of ``run_dirs`` to ``out`` atomically.

    Raises:
        ConfigError: fewer than two run directories.
        DataError: a run directory is missing or unreadable (names it).
        CheckpointError: ``out`` could not be written.
    """
    text = render_comparison(run_dirs)
    atomic_write_text(out, text)
    return out
