"""The device registry: profiles, model partitions and per-round history in SQL.

A SQLite file by default (WAL journal, ``synchronous=NORMAL``, foreign keys on) or
PostgreSQL by URL (``postgresql+psycopg://user@host/db``). :meth:`Registry.open`
upgrades the schema to the newest Alembic revision in place (migrations only add; they
never drop a table). Bulk writes are one transaction each, sent as executemany.

The registry owns one SQLAlchemy engine; close it (or use it as a context manager) to
release its connections. It is not shared between processes: each opens its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    bindparam,
    case,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from fedstrata.errors import ConfigError, RegistryError
from fedstrata.scheduling._migrate import current_revision, upgrade
from fedstrata.scheduling._sql import (
    PROFILE_COLUMNS,
    history_batch,
    history_rows,
    insert_absent,
    open_engine,
    order_by_ids,
    profile_rows,
    registry_url,
    sqlite_pragmas,
    upsert,
)
from fedstrata.scheduling._tables import device_profile, model_partitions, round_history
from fedstrata.scheduling.records import (
    AllocationCandidates,
    DeviceProfiles,
    HistoryBatch,
    ModelPartition,
)

__all__ = ["AllocationCandidates", "Registry", "registry_url"]

log = logging.getLogger(__name__)

_CHUNK = 5000  # ids per IN (...) clause, below every backend's parameter limit


class Registry:
    """Device profiles, model partitions and round history behind one engine."""

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose database is already at the head revision (use :meth:`open`)."""
        self._engine = engine

    @classmethod
    def open(cls, target: str | os.PathLike[str], *, echo: bool = False) -> Registry:
        """Connect to ``target`` (URL or SQLite file path) and migrate it to head.

        Raises:
            RegistryError: the database is unreachable or cannot be migrated.
            MissingDependencyError: a PostgreSQL URL without ``fedstrata[postgres]``.
            ConfigError: an empty target.
        """
        url = registry_url(target)
        try:
            engine = open_engine(url, echo=echo)
        except (SQLAlchemyError, ValueError) as exc:
            raise RegistryError(f"cannot open registry {url!r}: {exc}") from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", sqlite_pragmas)
        try:
            upgrade(engine, "head")
        except Exception:
            engine.dispose()
            raise
        log.info("device registry open at %s (revision %s)", engine.url, current_revision(engine))
        return cls(engine)

    def close(self) -> None:
        """Release every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return str(self._engine.dialect.name)

    def revision(self) -> str | None:
        """The schema's Alembic revision."""
        return current_revision(self._engine)

    @contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            raise RegistryError(f"registry {what}: inconsistent data: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise RegistryError(f"registry {what} failed: {exc}") from exc

    # ----------------------------------------------------------------- devices

    def upsert_devices(self, profiles: DeviceProfiles, *, now: datetime | None = None) -> int:
        """Insert or update many devices in one transaction; returns the row count.

        An update replaces every profile column, measured ones included; to add devices
        without touching registered ones use :meth:`insert_devices`.

        Raises:
            RegistryError: the write failed.
        """
        rows = profile_rows(profiles, now or datetime.now(UTC))
        with self._tx("upsert_devices") as conn:
            upsert(conn, device_profile, rows)
        log.info("registry: upserted %d devices", len(rows))
        return len(rows)

    def insert_devices(self, profiles: DeviceProfiles, *, now: datetime | None = None) -> int:
        """Register the devices of ``profiles`` that are not registered yet, in one
        transaction; registered devices keep every column (a measured profile is never
        replaced). Returns how many devices were added.

        Raises:
            RegistryError: the read or the write failed.
        """
        with self._tx("insert_devices") as conn:
            known = set(self._known_ids(conn, profiles.device_id.tolist()))
            fresh = np.array([d not in known for d in profiles.device_id.tolist()], dtype=bool)
            rows = profile_rows(profiles.take(np.flatnonzero(fresh)), now or datetime.now(UTC))
            insert_absent(conn, device_profile, rows)
        log.info("registry: added %d devices, kept %d registered", len(rows), len(known))
        return len(rows)

    @staticmethod
    def _known_ids(conn: Connection, ids: list[int]) -> list[int]:
        col = device_profile.c.device_id
        found: list[int] = []
        for i in range(0, len(ids), _CHUNK):
            part = ids[i : i + _CHUNK]
            found.extend(int(r[0]) for r in conn.execute(select(col).where(col.in_(part))))
        return found

    def update_measurement(
        self,
        device_id: int,
        *,
        cpu_score: float,
        memory_gb: float,
        network_latency_ms: float,
        bf16_speedup: float | None = None,
        fp16_speedup: float | None = None,
        now: datetime | None = None,
    ) -> None:
        """Insert or update one device's measured columns, keeping its other columns
        (the speed factors too when None).

        Raises:
            RegistryError: the write failed.
        """
        row = {
            "device_id": int(device_id),
            "cpu_score": float(cpu_score),
            "memory_gb": float(memory_gb),
            "network_latency": float(network_latency_ms),
            "last_update": now or datetime.now(UTC),
        }
        factors = {"bf16_speedup": bf16_speedup, "fp16_speedup": fp16_speedup}
        row |= {k: float(v) for k, v in factors.items() if v is not None}
        with self._tx("update_measurement") as conn:
            upsert(conn, device_profile, [row])

    def count_devices(self) -> int:
        """How many devices are registered."""
        with self._tx("count_devices") as conn:
            return int(conn.execute(select(func.count()).select_from(device_profile)).scalar_one())

    def devices(
        self, device_ids: Sequence[int] | NDArray[np.int64] | None = None
    ) -> DeviceProfiles:
        """Profiles of ``device_ids`` in that order (all devices by id when ``None``).

        Raises:
            RegistryError: a requested device is not registered, or the read failed.
        """
        found = self.registered(device_ids)
        return found.take(order_by_ids(found.device_id, device_ids))

    def registered(
        self, device_ids: Sequence[int] | NDArray[np.int64] | None = None
    ) -> DeviceProfiles:
        """Profiles of those of ``device_ids`` that are registered, by id (all when ``None``).

        Raises:
            RegistryError: the read failed.
        """
        t = device_profile
        cols = [t.c.device_id, *(t.c[db] for db in PROFILE_COLUMNS.values())]
        rows = self._select_by_ids(select(*cols), device_ids)
        table = np.array(rows, dtype=np.float64).reshape(len(rows), len(cols))
        table = table[np.argsort(table[:, 0], kind="stable")]
        columns = (table[:, i] for i in range(1, len(cols)))
        return DeviceProfiles(table[:, 0].astype(np.int64), *columns)

    def avg_train_time(self, device_ids: Sequence[int] | NDArray[np.int64]) -> NDArray[np.float64]:
        """Each device's EWMA of measured training seconds (NaN when never measured).

        Raises:
            RegistryError: a requested device is not registered, or the read failed.
        """
        t = device_profile
        rows = self._select_by_ids(select(t.c.device_id, t.c.avg_train_time), device_ids)
        got = np.array([r[0] for r in rows], dtype=np.int64)
        vals = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
        return vals[order_by_ids(got, device_ids)]

    def _select_by_ids(
        self, stmt: Any, device_ids: Sequence[int] | NDArray[np.int64] | None
    ) -> list[Any]:
        with self._tx("read devices") as conn:
            if device_ids is None:
                return list(conn.execute(stmt.order_by(device_profile.c.device_id)))
            ids = np.asarray(device_ids, dtype=np.int64).tolist()
            rows: list[Any] = []
            for i in range(0, len(ids), _CHUNK):
                part = ids[i : i + _CHUNK]
                rows.extend(conn.execute(stmt.where(device_profile.c.device_id.in_(part))))
            return rows

    def delete_devices(self, device_ids: Sequence[int] | NDArray[np.int64]) -> int:
        """Remove devices and their history; returns how many devices were removed.

        Raises:
            RegistryError: the write failed.
        """
        ids = np.asarray(device_ids, dtype=np.int64).tolist()
        removed = 0
        with self._tx("delete_devices") as conn:
            for i in range(0, len(ids), _CHUNK):
                part = ids[i : i + _CHUNK]
                conn.execute(delete(round_history).where(round_history.c.device_id.in_(part)))
                res = conn.execute(
                    delete(device_profile).where(device_profile.c.device_id.in_(part))
                )
                removed += int(res.rowcount)
        return removed

    # -------------------------------------------------------------- partitions

    def upsert_partitions(self, partitions: Sequence[ModelPartition]) -> None:
        """Insert or update model partitions in one transaction.

        Raises:
            RegistryError: the write failed.
        """
        rows = [
            {
                "partition_id": p.partition_id,
                "required_memory": p.required_memory_gb,
                "compute_intensity": p.compute_intensity,
                "name": p.name,
            }
            for p in partitions
        ]
        with self._tx("upsert_partitions") as conn:
            upsert(conn, model_partitions, rows)

    def partitions(self) -> list[ModelPartition]:
        """Every partition, by id."""
        t = model_partitions
        stmt = select(t.c.partition_id, t.c.required_memory, t.c.compute_intensity, t.c.name)
        with self._tx("partitions") as conn:
            rows = conn.execute(stmt.order_by(t.c.partition_id)).all()
        return [ModelPartition(int(r[0]), float(r[1]), float(r[2]), str(r[3])) for r in rows]

    def allocation_candidates(
        self,
        partition_id: int | None = None,
        *,
        min_availability: float = 0.0,
        limit: int | None = None,
    ) -> AllocationCandidates:
        """The published allocation query: devices with enough memory for a partition,
        ordered by ``cpu_score / compute_intensity`` (descending, ties by device id).

        Raises:
            ConfigError: ``limit`` < 1.
            RegistryError: the read failed.
        """
        if limit is not None and limit < 1:
            raise ConfigError(f"allocation_candidates limit must be >= 1, got {limit}")
        d, p = device_profile, model_partitions
        score = (d.c.cpu_score / p.c.compute_intensity).label("score")
        stmt = (
            select(d.c.device_id, p.c.partition_id, score)
            .join_from(d, p, d.c.memory_gb >= p.c.required_memory)
            .where(d.c.availability >= min_availability)
            .order_by(score.desc(), d.c.device_id, p.c.partition_id)
        )
        if partition_id is not None:
            stmt = stmt.where(p.c.partition_id == partition_id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._tx("allocation_candidates") as conn:
            rows = conn.execute(stmt).all()
        return AllocationCandidates(
            np.array([r[0] for r in rows], dtype=np.int64),
            np.array([r[1] for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.float64),
        )

    # ----------------------------------------------------------------- history

    def record_history(
        self, batch: HistoryBatch, *, ewma: float = 0.3, now: datetime | None = None
    ) -> None:
        """Append history rows and fold measured times into ``avg_train_time``.

        One transaction: an executemany insert of the rows, then an executemany update
        of each measured device's EWMA (``avg = (1-ewma)*avg + ewma*actual_s``).

        Raises:
            ConfigError: ``ewma`` outside (0, 1].
            RegistryError: a row names an unregistered device, or the write failed.
        """
        if not 0 < ewma <= 1:
            raise ConfigError(f"record_history ewma must be in (0, 1], got {ewma}")
        rows = history_rows(batch)
        measured = np.flatnonzero(np.isfinite(batch.actual_s))
        stamp = now or datetime.now(UTC)
        avg = device_profile.c.avg_train_time
        new_t = bindparam("b_t", type_=Float)
        stmt = (
            update(device_profile)
            .where(device_profile.c.device_id == bindparam("b_id"))
            .values(
                avg_train_time=case((avg.is_(None), new_t), else_=(1 - ewma) * avg + ewma * new_t),
                last_update=bindparam("b_now"),
            )
        )
        params = [
            {"b_id": int(batch.device_id[i]), "b_t": float(batch.actual_s[i]), "b_now": stamp}
            for i in measured
        ]
        with self._tx("record_history") as conn:
            if rows:
                conn.execute(round_history.insert(), rows)
            if params:
                conn.execute(stmt, params)

    def history(
        self,
        *,
        device_ids: Sequence[int] | NDArray[np.int64] | None = None,
        since_round: int = 0,
        until_round: int | None = None,
    ) -> HistoryBatch:
        """History rows with ``since_round <= round_idx <= until_round``, by round then id.

        Raises:
            RegistryError: the read failed.
        """
        h = round_history
        stmt = select(
            h.c.device_id,
            h.c.round_idx,
            h.c.assigned_work,
            h.c.completed_work,
            h.c.predicted_s,
            h.c.actual_s,
            h.c.status,
        ).where(h.c.round_idx >= since_round)
        if until_round is not None:
            stmt = stmt.where(h.c.round_idx <= until_round)
        if device_ids is not None:
            stmt = stmt.where(h.c.device_id.in_(np.asarray(device_ids, dtype=np.int64).tolist()))
        with self._tx("history") as conn:
            rows = conn.execute(stmt.order_by(h.c.round_idx, h.c.device_id, h.c.id)).all()
        return history_batch(rows)
