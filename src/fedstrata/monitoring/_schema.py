"""The SQLite schema of ``metrics.sqlite`` and the row <-> event conversions.

Table ``rounds`` has one column per :class:`RoundMetrics` field, in field order, plus
``extras`` as a JSON object. Version 2 added the federated-evaluation tables
(:mod:`fedstrata.monitoring._fedeval_sql`); a version-1 store still reads. SQLite
stores NaN as NULL, so a NaN loss is stored as the text ``'nan'`` (NULL keeps
meaning "not measured"); floats otherwise round-trip exactly.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import fields

from fedstrata.errors import DataError
from fedstrata.monitoring._fedeval_sql import FED_EVAL_SQL
from fedstrata.monitoring.events import ClientFailure, RoundMetrics

__all__ = [
    "FAILURE_COLUMNS",
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

SCHEMA_VERSION = 2
READABLE_VERSIONS = frozenset({"1", "2"})  # 1: before federated evaluation

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
}
ROUND_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RoundMetrics))
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
        else:
            values.append(_encode(name, getattr(metrics, name)))
    return tuple(values)


def round_from_row(row: Sequence[object]) -> RoundMetrics:
    """The metrics stored in a ``rounds`` row.

    Raises:
        DataError: the row does not hold valid metrics (bad JSON, types or values).
    """
    if len(row) != len(ROUND_COLUMNS):
        raise DataError(f"rounds row has {len(row)} columns, expected {len(ROUND_COLUMNS)}")
    values = {name: _decode(name, value) for name, value in zip(ROUND_COLUMNS, row, strict=True)}
    values["extras"] = _load_extras(values["extras"], values["round_idx"])
    try:
        return RoundMetrics(**values)  # type: ignore[arg-type]
    except TypeError as exc:  # pragma: no cover - columns are checked above
        raise DataError(f"rounds row {values['round_idx']!r}: {exc}") from exc


def _load_extras(text: object, round_idx: object) -> object:
    if not isinstance(text, str):
        raise DataError(f"rounds row {round_idx!r}: extras is {type(text).__name__}, not JSON")
    try:
        extras = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"rounds row {round_idx!r}: extras is not valid JSON: {exc}") from exc
    if not isinstance(extras, dict):
        raise DataError(f"rounds row {round_idx!r}: extras must be a JSON object")
    return extras


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
    """Create the tables (idempotent) and record the schema version."""
    with conn:
        conn.executescript(SCHEMA_SQL)
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
