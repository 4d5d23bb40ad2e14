"""SQL helpers of the registry: URLs, SQLite pragmas, upserts and row conversion."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, Engine, Table, create_engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fedstrata.errors import ConfigError, MissingDependencyError, RegistryError
from fedstrata.scheduling.records import DeviceProfiles, HistoryBatch, WorkStatus

__all__ = [
    "history_batch",
    "history_rows",
    "insert_absent",
    "open_engine",
    "order_by_ids",
    "profile_rows",
    "registry_url",
    "sqlite_pragmas",
    "upsert",
]


def registry_url(target: str | os.PathLike[str]) -> str:
    """A SQLAlchemy URL for ``target``: a URL is kept, a filesystem path becomes SQLite.

    Raises:
        ConfigError: an empty target.
    """
    text = os.fspath(target)
    if not text:
        raise ConfigError("registry target must be a URL or a file path, got ''")
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def open_engine(url: str, *, echo: bool = False) -> Engine:
    """``create_engine(url)``, with a missing database driver named by its extra.

    Raises:
        MissingDependencyError: a PostgreSQL URL without the driver installed
            (``pip install 'fedstrata[postgres]'``).
        RegistryError: any other driver that cannot be imported.
    """
    try:
        return create_engine(url, echo=echo)
    except ModuleNotFoundError as exc:
        if url.startswith("postgresql"):
            raise MissingDependencyError(
                "psycopg", "fedstrata[postgres]", f"the PostgreSQL device registry at {url!r}"
            ) from exc
        raise RegistryError(f"cannot open registry {url!r}: driver missing: {exc}") from exc


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL journal, synchronous=NORMAL and foreign keys on every new connection."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def upsert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert or update ``rows`` (executemany) on the table's primary key.

    Raises:
        RegistryError: the backend has no ON CONFLICT upsert.
    """
    if not rows:
        return
    stmt, key = _insert(conn, table)
    changed = {c: stmt.excluded[c] for c in rows[0] if c != key}
    conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=changed), rows)


PROFILE_COLUMNS = {  # DeviceProfiles attribute -> device_profile column
    "cpu_score": "cpu_score",
    "memory_gb": "memory_gb",
    "network_latency_ms": "network_latency",
    "uplink_mbps": "uplink_mbps",
    "downlink_mbps": "downlink_mbps",
    "availability": "availability",
    "bf16_speedup": "bf16_speedup",
    "fp16_speedup": "fp16_speedup",
}


def profile_rows(profiles: DeviceProfiles, stamp: datetime) -> list[dict[str, Any]]:
    """``device_profile`` rows of ``profiles``, stamped ``last_update = stamp``."""
    cols = {db: getattr(profiles, attr).tolist() for attr, db in PROFILE_COLUMNS.items()}
    return [
        {"device_id": d, "last_update": stamp, **{c: v[i] for c, v in cols.items()}}
        for i, d in enumerate(profiles.device_id.tolist())
    ]


def insert_absent(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (executemany) whose primary key is not in the table; keep the others.

    Raises:
        RegistryError: the backend has no ON CONFLICT clause.
    """
    if not rows:
        return
    stmt, key = _insert(conn, table)
    conn.execute(stmt.on_conflict_do_nothing(index_elements=[key]), rows)


def _insert(conn: Connection, table: Table) -> tuple[Any, str]:
    """The backend's INSERT (with an ON CONFLICT clause) for ``table`` and its key column.

    Raises:
        RegistryError: the backend has no ON CONFLICT clause.
    """
    stmt: Any
    if conn.dialect.name == "sqlite":
        stmt = sqlite_insert(table)
    elif conn.dialect.name == "postgresql":
        stmt = pg_insert(table)
    else:
        raise RegistryError(f"registry backend {conn.dialect.name!r} is not supported")
    return stmt, next(iter(table.primary_key.columns)).name


def order_by_ids(
    got: NDArray[np.int64], wanted: Sequence[int] | NDArray[np.int64] | None
) -> NDArray[np.intp]:
    """Positions in ``got`` of each id in ``wanted`` (all of ``got`` when ``None``).

    Raises:
        RegistryError: a wanted id is missing.
    """
    if wanted is None:
        return np.arange(got.size)
    want = np.asarray(wanted, dtype=np.int64)
    sort = np.argsort(got)
    pos = np.searchsorted(got[sort], want).clip(0, max(got.size - 1, 0))
    found = got.size > 0 and bool((got[sort][pos] == want).all())
    if not found:
        missing = sorted(set(want.tolist()) - set(got.tolist()))
        raise RegistryError(f"devices not registered: {missing[:10]} ({len(missing)} total)")
    out: NDArray[np.intp] = sort[pos]
    return out


def history_rows(batch: HistoryBatch) -> list[dict[str, Any]]:
    """Insert parameters of a history batch (NaN becomes NULL)."""
    names = [WorkStatus(int(s)).name.lower() for s in batch.status]
    pred = [None if not np.isfinite(v) else v for v in batch.predicted_s.tolist()]
    act = [None if not np.isfinite(v) else v for v in batch.actual_s.tolist()]
    return [
        {
            "device_id": d,
            "round_idx": r,
            "assigned_work": a,
            "completed_work": c,
            "predicted_s": p,
            "actual_s": t,
            "status": s,
        }
        for d, r, a, c, p, t, s in zip(
            batch.device_id.tolist(),
            batch.round_idx.tolist(),
            batch.assigned_work.tolist(),
            batch.completed_work.tolist(),
            pred,
            act,
            names,
            strict=True,
        )
    ]


def history_batch(rows: Sequence[Any]) -> HistoryBatch:
    """A history batch from selected rows.

    Raises:
        RegistryError: a row holds an unknown status.
    """

    def col(i: int, dtype: type) -> NDArray[Any]:
        return np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=dtype)

    try:
        status = np.array([WorkStatus[str(r[6]).upper()] for r in rows], dtype=np.int8)
    except KeyError as exc:
        raise RegistryError(f"round_history holds an unknown status {exc}") from None
    return HistoryBatch(
        col(0, np.int64),
        col(1, np.int64),
        col(2, np.int64),
        col(3, np.int64),
        col(4, np.float64),
        col(5, np.float64),
        status,
    )
