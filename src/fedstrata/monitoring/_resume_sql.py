"""Reopening an interrupted run's ``metrics.sqlite`` to continue it (Issue 15 part 3).

A resumed run continues from its newest good checkpoint, which may be older than the
last round the crashed process recorded. The rounds after the checkpoint are
**truncated** (their rounds, client failures, federated evaluations, per-device and
per-node rows and alerts deleted in one transaction; the per-device totals recomputed
from the rounds kept) and then recorded again by the resumed run, so the store holds each
round once, as the continued run computed it.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from fedstrata.errors import DataError
from fedstrata.monitoring._device_sql import rebuild_totals
from fedstrata.monitoring.events import RunStarted

__all__ = ["started_event", "truncate_after"]

logger = logging.getLogger(__name__)

_TABLES = (
    "rounds",
    "client_failures",
    "fed_eval_rounds",
    "fed_eval_metrics",
    "fed_eval_clients",
    "device_rounds",
    "node_rounds",
    "alerts",
)


def started_event(conn: sqlite3.Connection, config_yaml: str) -> RunStarted:
    """The run's ``RunStarted``, rebuilt from its ``meta`` table and config text.

    Raises:
        DataError: the meta table lacks the run's id, clients or parameters.
    """
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    try:
        clients, params = int(meta["num_clients"]), int(meta["num_params"])
        return RunStarted(meta["run_id"], config_yaml, clients, params)
    except (KeyError, ValueError) as exc:
        raise DataError(f"the run's meta table lacks {exc}") from exc


def truncate_after(conn: sqlite3.Connection, rounds_kept: int, run_dir: Path) -> int:
    """Delete every record of rounds ``>= rounds_kept`` (a WARNING says how many
    rounds); returns the rounds deleted."""
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    with conn:
        (dropped,) = conn.execute(
            "SELECT COUNT(*) FROM rounds WHERE round_idx >= ?", (rounds_kept,)
        ).fetchone()
        for table in _TABLES:
            if table in present:
                conn.execute(f"DELETE FROM {table} WHERE round_idx >= ?", (rounds_kept,))
        if "device_totals" in present:  # running sums: recomputed from the rounds kept
            rebuild_totals(conn)
    if dropped:
        logger.warning(
            "%s: dropped %d round(s) recorded after round %d, after the checkpoint the "
            "run resumes from; the resumed run records them again",
            run_dir, dropped, rounds_kept - 1,
        )  # fmt: skip
    return int(dropped)
