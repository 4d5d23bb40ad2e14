"""Reopening an interrupted run's ``metrics.sqlite`` to continue it (Issue 15 part 3).

A resumed run continues from its newest good checkpoint, which may be older than the
last round the crashed process recorded. The rounds after the checkpoint are
**truncated** (their rounds, client failures and federated evaluations deleted in
one transaction) and then recorded again by the resumed run, so the store holds each
round once, as the continued run computed it.
"""

from __future__ import annotations

import sqlite3

__all__ = ["truncate_after"]

_TABLES = ("rounds", "client_failures", "fed_eval_rounds", "fed_eval_metrics", "fed_eval_clients")


def truncate_after(conn: sqlite3.Connection, rounds_kept: int) -> int:
    """Delete every record of rounds ``>= rounds_kept``; returns the rounds deleted."""
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    with conn:
        (dropped,) = conn.execute(
            "SELECT COUNT(*) FROM rounds WHERE round_idx >= ?", (rounds_kept,)
        ).fetchone()
        for table in _TABLES:
            if table in present:
                conn.execute(f"DELETE FROM {table} WHERE round_idx >= ?", (rounds_kept,))
    return int(dropped)
