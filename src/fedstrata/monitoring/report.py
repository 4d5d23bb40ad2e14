"""A self-contained HTML report of one run, read from its run directory.

``report.html`` holds inline SVG figures (no scripts, no external assets; a Content
Security Policy forbids both) and escapes every piece of text from the run with
:func:`html.escape`. It works for a run still being written (no ``summary.json``: the
summary is computed from the stored rounds), for a single round, for runs that
never measured accuracy, and without matplotlib (the ``plot`` extra; tables only).
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedstrata.errors import DataError, MissingDependencyError
from fedstrata.monitoring._atomic import atomic_write_text
from fedstrata.monitoring._plots import (
    FED_EVAL_SECTION,
    Plot,
    render_fed_eval_plots,
    render_plots,
)
from fedstrata.monitoring.events import ClientFailure, RoundMetrics, RunStatus, RunTotals
from fedstrata.monitoring.fedeval import FedEvalMetrics
from fedstrata.monitoring.rundir import REPORT_FILE, SUMMARY_FILE, build_summary
from fedstrata.monitoring.runstore import RunStore

__all__ = ["MAX_FAILURE_ROWS", "write_report"]

log = logging.getLogger(__name__)
MAX_FAILURE_ROWS = 50

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; text-align: center; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
p.note { color: #666; font-style: italic; }
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_SECTION_ORDER = ("Accuracy", "Loss", "Communication", "Round time", "Features", "Extras")


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit} ({int(n):,} B)"
    return f"{int(n):,} B"


def _fmt_seconds(s: float) -> str:
    if s >= 3600:
        return f"{s:,.1f} s ({s / 3600:.2f} h)"
    if s >= 60:
        return f"{s:,.1f} s ({s / 60:.1f} min)"
    return f"{s:.3g} s"


def _fmt(key: str, value: object) -> str:
    """Human text for one summary value (not yet escaped)."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if key.startswith("bytes"):
        return _fmt_bytes(value)
    if key.endswith("_s"):
        return _fmt_seconds(float(value))
    return f"{value:,}" if isinstance(value, int) else f"{value:.6g}"


def _summary_rows(summary: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    for key, value in summary.items():
        if key == "schema_version":
            continue
        if isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                if isinstance(sub_value, Mapping):  # final_stats: family -> fields
                    for name, number in sub_value.items():
                        yield f"{key}: {sub_key}.{name}", _fmt(str(name), number)
                else:
                    yield f"{key}: {sub_key}", _fmt(str(sub_key), sub_value)
        else:
            yield key.replace("_", " "), _fmt(key, value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = (
            f'<td class="num">{_esc(c)}</td>' if i in numeric else f"<td>{_esc(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_esc(title)}</h2>\n{body}\n</section>"


def _plots_html(plots: Sequence[Plot]) -> list[str]:
    sections = []
    for name in _SECTION_ORDER:
        figures = [
            f"<figure>{p.svg}<figcaption>{_esc(p.title)}</figcaption></figure>"
            for p in plots
            if p.section == name
        ]
        if figures:
            sections.append(_section(name, "\n".join(figures)))
    return sections


def _figures_html(rounds: Sequence[RoundMetrics]) -> list[str]:
    """The figure sections, or a note saying how to get them when matplotlib is missing."""
    try:
        return _plots_html(render_plots(rounds))
    except MissingDependencyError as exc:
        log.warning("report without figures: %s", exc)
        return [f'<p class="note">No figures: {_esc(exc)}</p>']


def _failures_html(failures: Sequence[ClientFailure], total: int) -> str:
    if total == 0:
        return '<p class="note">No client failures were recorded.</p>'
    rows = [(str(f.round_idx), str(f.client_id), f.reason) for f in failures]
    note = f"Showing the first {len(failures):,} of {total:,} client failures."
    table = _table(("round", "client", "reason"), rows, numeric={0, 1})
    return f'<p class="note">{_esc(note)}</p>\n{table}'


_FED_EVAL_NOTE = (
    "Each client evaluated the global model on its own held-out data. The mean is "
    "weighted by examples; std, percentiles, min, max and the worst 10% (the mean of "
    "the worst tenth of clients, at least one) are over clients, each counting once."
)


def _fed_eval_html(evals: Sequence[FedEvalMetrics]) -> str:
    last = evals[-1]
    head = f"Last evaluation: round {last.round_idx}, {len(last.results)} clients"
    if last.clients_failed:
        head += f" ({last.clients_failed} failed)"
    rows = [
        (d.metric, f"{d.clients:,}", f"{d.examples:,}",
         *(f"{v:.4g}" for v in (d.mean, d.worst10, d.p10, d.p50, d.p90, d.std, d.min, d.max)))
        for d in last.distributions
    ]  # fmt: skip
    header = ("metric", "clients", "examples", "weighted mean", "worst 10%", "p10", "p50",
              "p90", "std", "min", "max")  # fmt: skip
    table = _table(header, rows, numeric=set(range(1, len(header))))
    figures = [
        f"<figure>{p.svg}<figcaption>{_esc(p.title)}</figcaption></figure>"
        for p in render_fed_eval_plots(evals)
    ]
    body = [f'<p class="note">{_esc(_FED_EVAL_NOTE)}</p>', f"<p>{_esc(head)}</p>", table]
    return _section(FED_EVAL_SECTION, "\n".join([*body, *figures]))


def _load_summary(
    store: RunStore, rounds: Sequence[RoundMetrics], evals: Sequence[FedEvalMetrics]
) -> dict[str, Any]:
    """``summary.json``, or one computed from the rounds when it does not exist yet."""
    if (store.path / SUMMARY_FILE).exists():
        return store.summary()
    totals = RunTotals()
    for metrics in rounds:
        totals.add(metrics)
    if evals:
        totals.add_fed_eval(evals[-1])
    reason = f"no {SUMMARY_FILE}: the run is still going or ended without closing its store"
    finished = totals.finish(store.path.name, RunStatus.INTERRUPTED, stop_reason=reason)
    return build_summary(finished, totals, None, store.failure_count())


def _config_html(store: RunStore) -> str:
    try:
        return f"<pre>{_esc(store.config_text())}</pre>"
    except DataError:
        return '<p class="note">No configuration was stored.</p>'


def _page(title: str, sections: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )


def render_report(store: RunStore) -> str:
    """The report page for the run in ``store``, as HTML text.

    Raises:
        DataError: the run's metrics or ``summary.json`` are unreadable.
    """
    rounds = store.rounds()
    evals = store.fed_evals()
    summary = _load_summary(store, rounds, evals)
    sections = [
        _section("Summary", _table(("field", "value"), _summary_rows(summary), numeric=set()))
    ]
    if rounds:
        sections.extend(_figures_html(rounds))
        if all(m.accuracy is None for m in rounds):
            sections.append('<p class="note">No test accuracy was measured in this run.</p>')
    else:
        sections.append('<p class="note">No rounds were recorded.</p>')
    if evals:
        sections.insert(1, _fed_eval_html(evals))
    failures = store.failures(limit=MAX_FAILURE_ROWS)
    sections.append(_section("Client failures", _failures_html(failures, store.failure_count())))
    sections.append(_section("Configuration", _config_html(store)))
    return _page(f"fedstrata run {summary.get('run_id', store.path.name)}", sections)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's HTML report (default ``run_dir/report.html``) and return its path.

    The file is written atomically. Matplotlib is imported only when a run has rounds;
    without it (the ``plot`` extra) the report has tables and a note instead of figures.

    Args:
        run_dir: a run directory written by :class:`RunStore`.
        out: where to write; default ``run_dir / "report.html"``.

    Raises:
        DataError: the run directory, its metrics or its ``summary.json`` are missing or
            unreadable (names the file).
        CheckpointError: the report could not be written.
    """
    with RunStore.open(run_dir) as store:
        text = render_report(store)
    path = run_dir / REPORT_FILE if out is None else out
    atomic_write_text(path, text)
    return path
