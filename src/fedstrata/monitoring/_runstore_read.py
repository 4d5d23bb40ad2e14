"""The reading half of a run store: the rounds, evaluations, alerts, per-device and
per-node figures, the summary, the config and the model of one run directory.

:class:`RunReader` is what :meth:`fedstrata.monitoring.runstore.RunStore.open` gives
(a read-only connection; a dashboard may read while the run writes, WAL mode); the
writing :class:`~fedstrata.monitoring.runstore.RunStore` extends it. Every error
names the file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from fedstrata.core import FloatVector, ParamSpec
from fedstrata.errors import DataError
from fedstrata.monitoring import _alerts_sql, _device_sql, _fedeval_sql, _schema
from fedstrata.monitoring._alert import Alert
from fedstrata.monitoring._model import read_model
from fedstrata.monitoring.devices import DeviceStats, TierIngress
from fedstrata.monitoring.events import ClientFailure, RoundMetrics
from fedstrata.monitoring.fedeval import FedEvalMetrics
from fedstrata.monitoring.rundir import CONFIG_FILE, METRICS_FILE, MODEL_FILE, SUMMARY_FILE

__all__ = ["RunReader"]

_T = TypeVar("_T")


class RunReader:
    """The reading methods of a run directory over an open SQLite connection.

    Safe to share between threads (one lock around the connection).
    """

    def __init__(self, run_dir: Path, conn: sqlite3.Connection) -> None:
        self._dir = run_dir
        self._conn = conn
        self._lock = threading.RLock()
        self._closed = False
        self._has_devices = True  # a store before version 4 has no per-device tables
        self._columns: tuple[str, ...] = _schema.ROUND_COLUMNS  # a version-1/2 store: fewer

    @property
    def path(self) -> Path:
        """The run directory."""
        return self._dir

    @contextmanager
    def _db(self, action: str) -> Iterator[None]:
        """Hold the lock and map SQLite errors to DataError naming the file."""
        with self._lock:
            if self._closed:
                raise DataError(f"{self._dir / METRICS_FILE}: cannot {action}: store is closed")
            try:
                yield
            except sqlite3.Error as exc:
                raise DataError(f"{self._dir / METRICS_FILE}: cannot {action}: {exc}") from exc

    def rounds(self, since: int | None = None) -> list[RoundMetrics]:
        """Every stored round (only those after round ``since``, if given), by index.

        Raises:
            DataError: the database is unreadable or holds invalid rows (names the file).
        """
        columns = self._columns
        after = -1 if since is None else since
        with self._db("read rounds"):
            sql = f"SELECT {', '.join(columns)} FROM rounds WHERE round_idx > ? ORDER BY round_idx"
            rows = self._conn.execute(sql, (after,)).fetchall()
        decode = partial(_schema.round_from_row, columns=columns)
        return [self._decoded(decode, row) for row in rows]

    def fed_evals(self) -> list[FedEvalMetrics]:
        """Every stored federated evaluation, by round (none in a version-1 store).

        Raises:
            DataError: the database is unreadable or holds invalid rows (names the file).
        """
        with self._db("read federated evaluations"):
            try:
                return _fedeval_sql.read_fed_eval(self._conn)
            except DataError as exc:
                raise DataError(f"{self._dir / METRICS_FILE}: {exc}") from exc

    def meta(self) -> dict[str, str]:
        """The run's ``meta`` table: ``schema_version``, and after RunStarted ``run_id``,
        ``num_clients`` and ``num_params``.

        Raises:
            DataError: the database is unreadable (names the file).
        """
        with self._db("read the run's meta data"):
            return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def alerts(self) -> list[Alert]:
        """Every stored alert firing, in order ([] for a store written before alerts).

        Raises:
            DataError: the database is unreadable or holds invalid rows (names the file).
        """
        with self._db("read alerts"):
            try:
                return _alerts_sql.read_alerts(self._conn)
            except DataError as exc:
                raise DataError(f"{self._dir / METRICS_FILE}: {exc}") from exc

    def device_stats(self) -> list[DeviceStats]:
        """Each client ever selected, over the run so far, by client id (none in a store
        before version 4, or from a driver that records no per-device figures).

        Raises:
            DataError: the database is unreadable (names the file).
        """
        with self._db("read device statistics"):
            return _device_sql.read_device_stats(self._conn) if self._has_devices else []

    def tier_stats(self) -> list[TierIngress]:
        """Each aggregating node's ingress in each round of a tree, by round then node
        (none for a flat federation or a store before version 4).

        Raises:
            DataError: the database is unreadable (names the file).
        """
        with self._db("read tier statistics"):
            return _device_sql.read_tier_stats(self._conn) if self._has_devices else []

    def utilization_by_bin(
        self, after: int, upto: int, width: int
    ) -> list[tuple[int, int, float, int]]:
        """Device utilization summed per round in ``(after, upto]`` and per bin of
        ``width`` client ids: rows ``(round, client_id // width, sum, count)``, NULL
        (NaN) utilizations not counted; none in a store before version 4.

        Raises:
            DataError: ``width`` < 1, or the database is unreadable (names the file).
        """
        if width < 1:
            raise DataError(f"utilization_by_bin: width must be >= 1 (got {width})")
        sql = (
            "SELECT round_idx, client_id / ?, SUM(utilization), COUNT(utilization) "
            "FROM device_rounds WHERE round_idx > ? AND round_idx <= ? "
            "AND utilization IS NOT NULL GROUP BY 1, 2"
        )
        with self._db("read device utilization"):
            if not self._has_devices:
                return []
            return self._conn.execute(sql, (width, after, upto)).fetchall()

    def failures(self, limit: int | None = None) -> list[ClientFailure]:
        """Stored client failures in the order they were reported (the first ``limit``).

        Raises:
            DataError: the database is unreadable or holds invalid rows (names the file).
        """
        sql = "SELECT round_idx, client_id, reason FROM client_failures ORDER BY id LIMIT ?"
        with self._db("read client failures"):
            rows = self._conn.execute(sql, (-1 if limit is None else limit,)).fetchall()
        return [self._decoded(_schema.failure_from_row, row) for row in rows]

    def failure_count(self) -> int:
        """Number of stored client failures.

        Raises:
            DataError: the database is unreadable (names the file).
        """
        with self._db("count client failures"):
            (count,) = self._conn.execute("SELECT COUNT(*) FROM client_failures").fetchone()
        return int(count)

    def _decoded(self, decode: Callable[[Sequence[object]], _T], row: Sequence[object]) -> _T:
        try:
            return decode(row)
        except DataError as exc:
            raise DataError(f"{self._dir / METRICS_FILE}: {exc}") from exc

    def summary(self) -> dict[str, Any]:
        """The parsed ``summary.json``.

        Raises:
            DataError: it is missing (run unfinished or crashed), not valid JSON, or not a
                summary object (names the file).
        """
        path = self._dir / SUMMARY_FILE
        text = self._read_text(path, "the run has not finished or its store was not closed")
        try:
            summary = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(summary, dict) or "schema_version" not in summary:
            raise DataError(f"{path}: not a run summary (expected an object with schema_version)")
        return summary

    def config_text(self) -> str:
        """The stored ``config.yaml`` text.

        Raises:
            DataError: the file is missing or not UTF-8 (names the file).
        """
        return self._read_text(self._dir / CONFIG_FILE, "no RunStarted event was stored")

    @staticmethod
    def _read_text(path: Path, missing_hint: str) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise DataError(f"{path} is missing ({missing_hint})") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: unreadable: {exc}") from exc

    def load_model(self) -> tuple[ParamSpec, FloatVector]:
        """The saved model: its spec and flat float32 parameters.

        Raises:
            CheckpointError: ``model.npz`` is missing.
            CheckpointCorrupt: it is not a valid model file (names the file and the fault).
        """
        return read_model(self._dir / MODEL_FILE)
