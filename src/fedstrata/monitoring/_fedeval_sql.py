"""Federated-evaluation tables of ``metrics.sqlite`` (added in schema version 2).

The change is additive: a version-1 store (written before federated evaluation)
has none of these tables and reads as a run without federated evaluation.

* ``fed_eval_rounds``: one row per evaluated round (clients selected, failed, wall s);
* ``fed_eval_metrics``: one typed row per (round, metric): the distribution over
  clients (weighted mean, std, p10/p50/p90, min, max, worst 10%);
* ``fed_eval_clients``: one row per (round, client, metric): the raw values.

SQLite stores NaN as NULL; a NaN client value is stored as NULL and read back as NaN.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from dataclasses import astuple, fields

from fedstrata.monitoring.fedeval import ClientEval, FedEvalMetrics, MetricDistribution

__all__ = ["FED_EVAL_SQL", "has_fed_eval", "insert_fed_eval", "read_fed_eval"]

_DIST_COLUMNS = tuple(f.name for f in fields(MetricDistribution))
_DIST_TYPES = {"metric": "TEXT NOT NULL", "clients": "INTEGER NOT NULL",
               "examples": "INTEGER NOT NULL", "higher_is_better": "INTEGER NOT NULL"}  # fmt: skip

FED_EVAL_SQL = f"""
CREATE TABLE IF NOT EXISTS fed_eval_rounds (
    round_idx INTEGER PRIMARY KEY,
    clients_selected INTEGER NOT NULL,
    clients_failed INTEGER NOT NULL,
    wall_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fed_eval_metrics (
    round_idx INTEGER NOT NULL,
    {", ".join(f"{c} {_DIST_TYPES.get(c, 'REAL NOT NULL')}" for c in _DIST_COLUMNS)},
    PRIMARY KEY (round_idx, metric)
);
CREATE TABLE IF NOT EXISTS fed_eval_clients (
    round_idx INTEGER NOT NULL,
    client_id INTEGER NOT NULL,
    num_examples INTEGER NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (round_idx, client_id, metric)
);
"""


def has_fed_eval(conn: sqlite3.Connection) -> bool:
    """Whether the store has the federated-evaluation tables (schema version >= 2)."""
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'fed_eval_rounds'"
    return conn.execute(sql).fetchone() is not None


def insert_fed_eval(conn: sqlite3.Connection, event: FedEvalMetrics) -> None:
    """Insert ``event`` (inside the caller's transaction).

    Raises:
        sqlite3.IntegrityError: the round's federated evaluation is already stored.
    """
    r = event.round_idx
    conn.execute(
        "INSERT INTO fed_eval_rounds VALUES (?, ?, ?, ?)",
        (r, event.clients_selected, event.clients_failed, event.wall_s),
    )
    marks = ", ".join("?" * (len(_DIST_COLUMNS) + 1))
    conn.executemany(
        f"INSERT INTO fed_eval_metrics (round_idx, {', '.join(_DIST_COLUMNS)}) VALUES ({marks})",
        [(r, *astuple(d)) for d in event.distributions],
    )
    conn.executemany(
        "INSERT INTO fed_eval_clients VALUES (?, ?, ?, ?, ?)",
        [
            (r, c.client_id, c.num_examples, name, value if math.isfinite(value) else None)
            for c in event.results
            for name, value in c.metrics.items()
        ],
    )


def read_fed_eval(conn: sqlite3.Connection) -> list[FedEvalMetrics]:
    """Every stored federated evaluation, by round (none for a version-1 store)."""
    if not has_fed_eval(conn):
        return []
    dists: dict[int, list[MetricDistribution]] = defaultdict(list)
    sql = f"SELECT round_idx, {', '.join(_DIST_COLUMNS)} FROM fed_eval_metrics ORDER BY metric"
    for row in conn.execute(sql):
        values = list(row[1:])
        values[-1] = bool(values[-1])
        dists[int(row[0])].append(MetricDistribution(*values))
    clients: dict[int, dict[int, tuple[int, dict[str, float]]]] = defaultdict(dict)
    sql = "SELECT round_idx, client_id, num_examples, metric, value FROM fed_eval_clients"
    for r, cid, n, name, value in conn.execute(sql + " ORDER BY round_idx, client_id"):
        entry = clients[r].setdefault(cid, (n, {}))
        entry[1][name] = math.nan if value is None else float(value)
    out = []
    sql = "SELECT round_idx, clients_selected, clients_failed, wall_s FROM fed_eval_rounds"
    for r, selected, failed, wall_s in conn.execute(sql + " ORDER BY round_idx").fetchall():
        results = tuple(ClientEval(c, n, m) for c, (n, m) in clients[r].items())
        out.append(FedEvalMetrics(r, selected, failed, wall_s, results, tuple(dists[r])))
    return out
