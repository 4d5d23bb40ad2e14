"""Run directories: their file names, fresh unique names, and the summary object."""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from fedstrata.errors import CheckpointError, ConfigError
from fedstrata.monitoring.events import RunFinished, RunStarted, RunTotals

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "REPORT_FILE",
    "SUMMARY_FILE",
    "SUMMARY_SCHEMA_VERSION",
    "build_summary",
    "new_run_dir",
]

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.sqlite"
MODEL_FILE = "model.npz"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
SUMMARY_SCHEMA_VERSION = 1
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def new_run_dir(base: Path, name: str, timestamp: str | None = None) -> Path:
    """Create and return a fresh run directory ``base/<timestamp>-<name>[-<n>]``.

    Args:
        base: parent folder, created if missing.
        name: run name: letters, digits, ``.``, ``_``, ``-`` (at most 100).
        timestamp: injected time label (tests); default: local time ``YYYYmmdd-HHMMSS``.

    Raises:
        ConfigError: ``name`` or ``timestamp`` is not a safe file name.
        CheckpointError: the directory could not be created.
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S") if timestamp is None else timestamp
    for what, value in (("name", name), ("timestamp", stamp)):
        if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value):
            rule = "must be 1-100 of [A-Za-z0-9._-], starting with a letter or digit"
            raise ConfigError(f"new_run_dir: {what}={value!r} is invalid: {rule}")
    stem = f"{stamp}-{name}"
    try:
        base.mkdir(parents=True, exist_ok=True)
        for n in range(10_000):
            candidate = base / (stem if n == 0 else f"{stem}-{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate
    except OSError as exc:
        msg = f"new_run_dir: cannot create a run directory in {base}: {exc}"
        raise CheckpointError(msg) from exc
    raise CheckpointError(f"new_run_dir: {base} already holds 10000 runs named {stem!r}")


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def build_summary(
    finished: RunFinished, totals: RunTotals, started: RunStarted | None, failures_logged: int
) -> dict[str, Any]:
    """The ``summary.json`` object: strict JSON, non-finite numbers become ``null``."""
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "run_id": finished.run_id,
        "status": finished.status.value,
        "stop_reason": finished.stop_reason,
        "rounds": finished.rounds_completed,
        "final_accuracy": finished.final_accuracy,
        "best_accuracy": finished.best_accuracy,
        "final_loss": _finite_or_none(finished.final_loss),
        "sim_time_s": finished.sim_time_s,
        "wall_time_s": finished.wall_time_s,
        "wall_time_segment_s": finished.segment_wall_time_s,
        "bytes_up": finished.bytes_up,
        "bytes_down": finished.bytes_down,
        "bytes_total": finished.bytes_up + finished.bytes_down,
        "clients_selected": totals.clients_selected,
        "clients_completed": totals.clients_completed,
        "clients_failed": totals.clients_failed,
        "clients_late": totals.clients_late,
        "skipped_steps": totals.skipped_steps,
        "client_failures_logged": failures_logged,
        "num_clients": None if started is None else started.num_clients,
        "num_params": None if started is None else started.num_params,
        "final_extras": {k: _finite_or_none(v) for k, v in totals.final_extras.items()},
        "final_stats": {
            family: {k: _finite_or_none(v) for k, v in record.as_dict().items()}
            for family, record in totals.final_stats.items()
        },
        "final_fed_eval": {k: _finite_or_none(v) for k, v in totals.final_fed_eval.items()},
    }
