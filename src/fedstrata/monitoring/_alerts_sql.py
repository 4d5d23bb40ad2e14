"""The ``alerts`` table of ``metrics.sqlite``: one row per alert firing.

Additive: a store written before alerts existed has no such table and reads as a run
without alerts (the table is created by :func:`create_alerts_table` with the schema).
"""

from __future__ import annotations

import sqlite3

from fedstrata.errors import DataError
from fedstrata.monitoring._alert import Alert

__all__ = ["ALERTS_SQL", "insert_alert", "read_alerts"]

ALERTS_SQL = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    round_idx INTEGER NOT NULL,
    value REAL NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL
);
"""


def insert_alert(conn: sqlite3.Connection, alert: Alert) -> None:
    """Insert ``alert`` (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO alerts (rule, round_idx, value, severity, message) VALUES (?, ?, ?, ?, ?)",
        (alert.rule, alert.round, alert.value, alert.severity, alert.message),
    )


def read_alerts(conn: sqlite3.Connection) -> list[Alert]:
    """Every stored alert in firing order ([] for a store without the table).

    Raises:
        DataError: a row does not hold a valid alert.
    """
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alerts'"
    if conn.execute(sql).fetchone() is None:
        return []
    rows = conn.execute(
        "SELECT rule, round_idx, value, severity, message FROM alerts ORDER BY id"
    ).fetchall()
    alerts = []
    for rule, round_idx, value, severity, message in rows:
        if not (isinstance(round_idx, int) and isinstance(value, int | float)):
            raise DataError(f"alerts row of rule {rule!r}: round {round_idx!r}, value {value!r}")
        alerts.append(Alert(str(rule), round_idx, float(value), str(severity), str(message)))
    return alerts
