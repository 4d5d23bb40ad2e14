"""The per-device and per-tier tables of ``metrics.sqlite`` (schema version 4).

``device_rounds``: one row per selected client per round (keyed by round, then
client, so a round's rows append). ``device_totals``: one row per client, updated in
the same transaction (an upsert per row), so :meth:`RunStore.device_stats` reads one
row per client however many rounds ran. ``node_rounds``: one row per aggregating node
per round. A round's rows are inserted with ``executemany`` in the transaction that
stores its :class:`~fedstrata.monitoring.RoundMetrics`. NaN utilization is NULL.
"""

from __future__ import annotations

import math
import sqlite3

from fedstrata.monitoring.devices import DeviceRound, DeviceStats, RoundDetail, TierIngress

__all__ = [
    "DEVICE_SQL",
    "DEVICE_TABLES",
    "insert_detail",
    "read_device_stats",
    "read_tier_stats",
    "rebuild_totals",
]

DEVICE_TABLES = frozenset({"device_rounds", "device_totals", "node_rounds"})
DEVICE_SQL = """
CREATE TABLE IF NOT EXISTS device_rounds (
    round_idx INTEGER NOT NULL,
    client_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    download_s REAL NOT NULL,
    compute_s REAL NOT NULL,
    upload_s REAL NOT NULL,
    straggler INTEGER NOT NULL,
    utilization REAL,
    node TEXT NOT NULL,
    PRIMARY KEY (round_idx, client_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_totals (
    client_id INTEGER PRIMARY KEY,
    selected INTEGER NOT NULL,
    completed INTEGER NOT NULL,
    utilization_sum REAL NOT NULL,
    utilization_n INTEGER NOT NULL,
    stragglers INTEGER NOT NULL,
    compute_sum REAL NOT NULL,
    upload_sum REAL NOT NULL,
    node TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS node_rounds (
    round_idx INTEGER NOT NULL,
    node TEXT NOT NULL,
    tier TEXT NOT NULL,
    ingress_bytes INTEGER NOT NULL,
    clients INTEGER NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (round_idx, node)
) WITHOUT ROWID;
"""

_UPSERT = """
INSERT INTO device_totals VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (client_id) DO UPDATE SET
    selected = selected + 1,
    completed = completed + excluded.completed,
    utilization_sum = utilization_sum + excluded.utilization_sum,
    utilization_n = utilization_n + excluded.utilization_n,
    stragglers = stragglers + excluded.stragglers,
    compute_sum = compute_sum + excluded.compute_sum,
    upload_sum = upload_sum + excluded.upload_sum,
    node = excluded.node
"""


def _util(d: DeviceRound) -> float | None:
    return None if math.isnan(d.utilization) else d.utilization


def insert_detail(conn: sqlite3.Connection, detail: RoundDetail) -> None:
    """Insert one round's rows (the caller holds the transaction)."""
    r = detail.round_idx
    conn.executemany(
        "INSERT INTO device_rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (r, d.client_id, d.status, d.download_s, d.compute_s, d.upload_s,
             int(d.straggler), _util(d), d.node)
            for d in detail.devices
        ],
    )  # fmt: skip
    conn.executemany(
        _UPSERT,
        [
            (d.client_id, int(d.status == "accepted"), _util(d) or 0.0,
             int(_util(d) is not None), int(d.straggler), d.compute_s, d.upload_s, d.node)
            for d in detail.devices
        ],
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO node_rounds VALUES (?, ?, ?, ?, ?, ?)",
        [(r, n.node, n.tier, n.ingress_bytes, n.clients, n.seconds) for n in detail.nodes],
    )


def rebuild_totals(conn: sqlite3.Connection) -> None:
    """Recompute ``device_totals`` from the ``device_rounds`` that remain (after a
    resume truncated later rounds; the caller holds the transaction). The node is the
    one of each client's latest round, as :func:`insert_detail` keeps it."""
    conn.execute("DELETE FROM device_totals")
    conn.execute(
        """
        INSERT INTO device_totals
        SELECT d.client_id, COUNT(*), SUM(d.status = 'accepted'),
               COALESCE(SUM(d.utilization), 0.0), COUNT(d.utilization), SUM(d.straggler),
               SUM(d.compute_s), SUM(d.upload_s),
               (SELECT l.node FROM device_rounds l WHERE l.client_id = d.client_id
                ORDER BY l.round_idx DESC LIMIT 1)
        FROM device_rounds d GROUP BY d.client_id
        """
    )


def read_device_stats(conn: sqlite3.Connection) -> list[DeviceStats]:
    """One :class:`DeviceStats` per client ever selected, by client id."""
    sql = "SELECT * FROM device_totals ORDER BY client_id"
    out = []
    for cid, sel, done, usum, un, strag, csum, upsum, node in conn.execute(sql):
        util = usum / un if un else math.nan
        out.append(DeviceStats(cid, sel, done, util, strag, csum / sel, upsum / sel, node))
    return out


def read_tier_stats(conn: sqlite3.Connection) -> list[TierIngress]:
    """Every node's row of every round, by round then node."""
    sql = (
        "SELECT node, tier, round_idx, ingress_bytes, clients, seconds FROM node_rounds "
        "ORDER BY round_idx, node"
    )
    return [TierIngress(*row) for row in conn.execute(sql)]
