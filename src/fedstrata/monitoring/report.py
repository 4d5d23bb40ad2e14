"""A self-contained HTML report of one run, read from its run directory.

It reads as an operator would: the summary; the twelve federation metrics in their
four groups (communication, compute, model quality, reliability; each a table with
the formula and a figure for each metric that varies, next to the run's accuracy,
loss, bytes and round-time figures); then a section per feature the run used
(privacy, compression, scheduling, participation, tiers), the clients' accuracy
distribution under federated evaluation, the client failures and the configuration.
A constant series gets no figure: its table says so.

``report.html`` holds inline SVG figures (no scripts, no external assets; a Content
Security Policy forbids both) and escapes every piece of text from the run with
:func:`html.escape`. It works for a run still being written (no ``summary.json``: the
summary is computed from the stored rounds), for a single round, for runs that
never measured accuracy, and without matplotlib (the ``plot`` extra; tables only).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedstrata.errors import DataError, MissingDependencyError
from fedstrata.monitoring._atomic import atomic_write_text
from fedstrata.monitoring._html import esc, figures, page, section, table
from fedstrata.monitoring._plots import (
    FED_EVAL_SECTION,
    Plot,
    render_fed_eval_plots,
    render_panels,
    render_plots,
)
from fedstrata.monitoring._report_devices import (
    participation_section,
    scheduling_section,
    tiers_section,
)
from fedstrata.monitoring._report_resilience import resilience_section
from fedstrata.monitoring._report_sections import (
    Section,
    compression_section,
    metric_sections,
    privacy_section,
)
from fedstrata.monitoring.catalogue import federation_metrics
from fedstrata.monitoring.events import ClientFailure, RoundMetrics, RunStatus, RunTotals
from fedstrata.monitoring.fedeval import FedEvalMetrics
from fedstrata.monitoring.rundir import REPORT_FILE, SUMMARY_FILE, build_summary
from fedstrata.monitoring.runstore import RunStore

__all__ = ["MAX_FAILURE_ROWS", "write_report"]

log = logging.getLogger(__name__)
MAX_FAILURE_ROWS = 50


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


def _failures_html(failures: Sequence[ClientFailure], total: int) -> str:
    if total == 0:
        return '<p class="note">No client failures were recorded.</p>'
    rows = [(str(f.round_idx), str(f.client_id), f.reason) for f in failures]
    note = f"Showing the first {len(failures):,} of {total:,} client failures."
    grid = table(("round", "client", "reason"), rows, numeric={0, 1})
    return f'<p class="note">{esc(note)}</p>\n{grid}'


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
    grid = table(header, rows, numeric=set(range(1, len(header))))
    try:
        drawn = figures(render_fed_eval_plots(evals))
    except MissingDependencyError:
        drawn = ""
    body = [f'<p class="note">{esc(_FED_EVAL_NOTE)}</p>', f"<p>{esc(head)}</p>", grid, drawn]
    return section(FED_EVAL_SECTION, "\n".join(body))


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
        return f"<pre>{esc(store.config_text())}</pre>"
    except DataError:
        return '<p class="note">No configuration was stored.</p>'


def _config_tree(store: RunStore) -> dict[str, Any]:
    """The stored configuration as a mapping ({} when missing or unreadable)."""
    import yaml

    try:
        tree = yaml.safe_load(store.config_text())
    except (DataError, yaml.YAMLError):
        return {}
    return tree if isinstance(tree, dict) else {}


def _feature_sections(
    store: RunStore, rounds: Sequence[RoundMetrics], summary: dict[str, Any]
) -> list[Section]:
    rows = federation_metrics(rounds)
    built = metric_sections(rounds, rows)
    num_params = summary.get("num_params")
    extra = (
        privacy_section(rounds, rows, _config_tree(store)),
        compression_section(rounds, num_params if isinstance(num_params, int) else None),
        scheduling_section(rounds),
        participation_section(store.device_stats()),
        tiers_section(store.tier_stats()),
        resilience_section(rounds),
    )
    return [*built, *(s for s in extra if s is not None)]


def _rendered(
    rounds: Sequence[RoundMetrics], built: Sequence[Section]
) -> tuple[list[Plot], list[Plot], str]:
    """The main figures, the sections' panels, or neither and a note naming the extra."""
    try:
        main = render_plots(rounds)
        panels = render_panels([p for sec in built for p in sec.panels])
    except MissingDependencyError as exc:
        log.warning("report without figures: %s", exc)
        return [], [], f'<p class="note">No figures: {esc(exc)}</p>'
    return main, panels, ""


def _sections_html(rounds: Sequence[RoundMetrics], built: Sequence[Section]) -> list[str]:
    main, panels, missing = _rendered(rounds, built)
    out = [missing] if missing else []
    for sec in built:
        body = [figures(p for p in main if p.section in sec.main), *sec.parts]
        body.append(figures(p for p in panels if p.section == sec.title))
        if sec.title == "Model quality" and all(m.accuracy is None for m in rounds):
            body.insert(0, '<p class="note">No test accuracy was measured in this run.</p>')
        out.append(section(sec.title, "\n".join(b for b in body if b)))
    return out


def render_report(store: RunStore) -> str:
    """The report page for the run in ``store``, as HTML text.

    Raises:
        DataError: the run's metrics or ``summary.json`` are unreadable.
    """
    rounds = store.rounds()
    evals = store.fed_evals()
    summary = _load_summary(store, rounds, evals)
    sections = [section("Summary", table(("field", "value"), _summary_rows(summary), set()))]
    if rounds:
        sections.extend(_sections_html(rounds, _feature_sections(store, rounds, summary)))
    else:
        sections.append('<p class="note">No rounds were recorded.</p>')
    if evals:
        sections.insert(min(len(sections), 5), _fed_eval_html(evals))
    failures = store.failures(limit=MAX_FAILURE_ROWS)
    sections.append(section("Client failures", _failures_html(failures, store.failure_count())))
    sections.append(section("Configuration", _config_html(store)))
    return page(f"fedstrata run {summary.get('run_id', store.path.name)}", sections)


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
