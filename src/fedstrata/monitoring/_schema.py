"""The SQLite schema of ``metrics.sqlite`` and the row <-> event conversions.

Table ``rounds`` has one column per scalar :class:`RoundMetrics` field, in field
order, then ``extras`` (the task's own metrics) as a JSON object and ``stats`` (the
typed records, :mod:`fedstrata.core.metrics`) as a JSON object of family -> fields,
e.g. ``{"codec": {"uplink_ratio": 12.5, ...}, "privacy": {"epsilon_spent": 0.4, ...}}``.
Version 2 added the federated-evaluation tables
(:mod:`fedstrata.monitoring._fedeval_sql`); version 3 added ``stats``. Stores of
versions 1 and 2 still read: they have no ``stats`` column and kept the features'
figures as named floats in ``extras``, which map back into the typed fields on load
(:func:`~fedstrata.core.metrics.records_from_extras`). Version 4 added the per-device
and per-tier tables (:mod:`fedstrata.monitoring._device_sql`); a version-3 store reads
without them. Version 5 added the ``resilience`` family to ``stats`` (checkpoint times,
failovers: no new column or table, so a resumed run's truncation of ``rounds`` covers
it); a store of version 3 or 4 reads as before, and a reader that knows only version 4
refuses a version-5 store by its version instead of failing on the unknown family.
SQLite
stores NaN as NULL, so a NaN loss is stored as the text ``'nan'`` (NULL keeps
meaning "not measured"); floats otherwise round-trip exactly.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import fields

from fedstrata.core.metrics import (
    STATS_RECORDS,
    StatsRecord,
    record_from_dict,
    records_from_extras,
)
from fedstrata.errors import DataError
from fedstrata.monitoring._alerts_sql import ALERTS_SQL
from fedstrata.monitoring._device_sql import DEVICE_SQL
from fedstrata.monitoring._fedeval_sql import FED_EVAL_SQL
from fedstrata.monitoring.events import ClientFailure, RoundMetrics

__all__ = [
    "FAILURE_COLUMNS",
    "LEGACY_ROUND_COLUMNS",
    "READABLE_VERSIONS",
    "ROUND_COLUMNS",
    "SCHEMA_SQL",
    "SCHEMA_VERSION",
    "create_schema",
    "failure_from_row",
    "failure_to_row",
    "round_from_row",
    "round_to_row",
]

SCHEMA_VERSION = 5
# 1: no fed. eval.; 2: no stats; 3: no devices; 4: no resilience family
READABLE_VERSIONS = frozenset({"1", "2", "3", "4", "5"})

_ROUND_TYPES: dict[str, str] = {
    "round_idx": "INTEGER PRIMARY KEY",
    "accuracy": "REAL",
    "loss": "REAL",
    "train_loss": "REAL",
    "clients_selected": "INTEGER NOT NULL",
    "clients_completed": "INTEGER NOT NULL",
    "clients_failed": "INTEGER NOT NULL",
    "clients_late": "INTEGER NOT NULL",
    "bytes_up": "INTEGER NOT NULL",
    "bytes_down": "INTEGER NOT NULL",
    "sim_round_s": "REAL NOT NULL",
    "sim_time_s": "REAL NOT NULL",
    "wall_round_s": "REAL NOT NULL",
    "compute_s": "REAL NOT NULL",
    "downlink_s": "REAL NOT NULL",
    "uplink_s": "REAL NOT NULL",
    "extras": "TEXT NOT NULL",
    "stats": "TEXT NOT NULL",
}
_FAMILIES = frozenset(cls.FAMILY for cls in STATS_RECORDS)
LEGACY_ROUND_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in fields(RoundMetrics) if f.name not in _FAMILIES
)
ROUND_COLUMNS: tuple[str, ...] = (*LEGACY_ROUND_COLUMNS, "stats")
if set(ROUND_COLUMNS) != set(_ROUND_TYPES):  # pragma: no cover - a developer error
    raise RuntimeError("monitoring._schema is out of sync with RoundMetrics' fields")
FAILURE_COLUMNS: tuple[str, ...] = ("round_idx", "client_id", "reason")
_NAN_TEXT = "nan"
_NAN_COLUMNS = frozenset({"loss", "train_loss"})

SCHEMA_SQL = (
    f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    {", ".join(f"{name} {_ROUND_TYPES[name]}" for name in ROUND_COLUMNS)}
);
CREATE TABLE IF NOT EXISTS client_failures (
    id INTEGER PRIMARY KEY,
    round_idx INTEGER NOT NULL,
    client_id INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS client_failures_round ON client_failures (round_idx);
"""
    + FED_EVAL_SQL
    + ALERTS_SQL
    + DEVICE_SQL
)


def _encode(name: str, value: object) -> object:
    if name in _NAN_COLUMNS and isinstance(value, float) and math.isnan(value):
        return _NAN_TEXT
    return value


def _decode(name: str, value: object) -> object:
    if name in _NAN_COLUMNS and value == _NAN_TEXT:
        return math.nan
    return value


def round_to_row(metrics: RoundMetrics) -> tuple[object, ...]:
    """The ``rounds`` row for ``metrics``, in :data:`ROUND_COLUMNS` order."""
    values: list[object] = []
    for name in ROUND_COLUMNS:
        if name == "extras":
            values.append(json.dumps(dict(metrics.extras)))
        elif name == "stats":
            values.append(json.dumps({r.FAMILY: r.as_dict() for r in metrics.stats()}))
        else:
            values.append(_encode(name, getattr(metrics, name)))
    return tuple(values)


def round_from_row(row: Sequence[object], columns: Sequence[str] = ROUND_COLUMNS) -> RoundMetrics:
    """The metrics stored in a ``rounds`` row of ``columns`` (:data:`ROUND_COLUMNS`, or
    :data:`LEGACY_ROUND_COLUMNS` for a store before version 3: the features' figures
    in its ``extras`` become typed records).

    Raises:
        DataError: the row does not hold valid metrics (bad JSON, types or values).
    """
    if len(row) != len(columns):
        raise DataError(f"rounds row has {len(row)} columns, expected {len(columns)}")
    values = {name: _decode(name, value) for name, value in zip(columns, row, strict=True)}
    where = f"rounds row {values['round_idx']!r}"
    extras = _load_json(values.pop("extras"), where, "extras")
    if "stats" in values:
        stats = _load_stats(_load_json(values.pop("stats"), where, "stats"), where)
    else:
        stats, extras = _legacy_stats(extras, where)
    try:
        return RoundMetrics(**values, extras=extras, **stats)  # type: ignore[arg-type]
    except TypeError as exc:  # pragma: no cover - columns are checked above
        raise DataError(f"{where}: {exc}") from exc


def _load_json(text: object, where: str, name: str) -> dict[str, object]:
    if not isinstance(text, str):
        raise DataError(f"{where}: {name} is {type(text).__name__}, not JSON")
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: {name} is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise DataError(f"{where}: {name} must be a JSON object")
    return loaded


def _load_stats(stats: Mapping[str, object], where: str) -> dict[str, StatsRecord]:
    records: dict[str, StatsRecord] = {}
    for family, values in stats.items():
        if not isinstance(values, dict):
            raise DataError(f"{where}: stats[{family!r}] must be a JSON object")
        try:
            records[family] = record_from_dict(family, values)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from exc
    return records


def _legacy_stats(
    extras: Mapping[str, object], where: str
) -> tuple[dict[str, StatsRecord], dict[str, object]]:
    numbers = {k: v for k, v in extras.items() if isinstance(v, int | float)}
    try:
        records, rest = records_from_extras(numbers)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from exc
    return records, {k: v for k, v in extras.items() if k in rest or k not in numbers}


def failure_to_row(failure: ClientFailure) -> tuple[object, ...]:
    """The ``client_failures`` row for ``failure``, in :data:`FAILURE_COLUMNS` order."""
    return (failure.round_idx, failure.client_id, failure.reason)


def failure_from_row(row: Sequence[object]) -> ClientFailure:
    """The failure stored in a ``client_failures`` row.

    Raises:
        DataError: the row does not hold a valid failure.
    """
    round_idx, client_id, reason = row
    return ClientFailure(round_idx=round_idx, client_id=client_id, reason=reason)  # type: ignore[arg-type]


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables (idempotent) and record the schema version; a store of
    version 3 or 4 reopened to continue it (a resume) then has every table of this
    version and is relabelled, since it will hold the newer records."""
    with conn:
        conn.executescript(SCHEMA_SQL)
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version' AND value IN ('3', '4')",
            (str(SCHEMA_VERSION),),
        )
