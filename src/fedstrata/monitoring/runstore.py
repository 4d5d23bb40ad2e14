"""The run store: one directory per run, written as a metrics sink, read by reports.

Layout of a run directory::

    config.yaml      the resolved configuration, verbatim (from RunStarted)
    metrics.sqlite   tables ``rounds`` (one row per round), ``client_failures``, ``meta``,
                     ``fed_eval_*`` (federated evaluation, :mod:`._fedeval_sql`),
                     ``alerts`` (alert firings, :mod:`._alerts_sql`),
                     ``device_*`` and ``node_rounds`` (per device / tier, :mod:`._device_sql`)
    model.npz        final flat float32 parameters with their names and shapes
    summary.json     machine-readable summary (written at RunFinished, or at close)
    report.html      written later by :func:`fedstrata.monitoring.report.write_report`

``metrics.sqlite`` runs in WAL mode with ``synchronous=NORMAL``: each round (its metrics
and the client failures reported before it) is one transaction, and readers such as a
dashboard may read while the run writes. Small files are written atomically
(temporary sibling, fsync, ``os.replace``).

Errors: unreadable or inconsistent ``metrics.sqlite``, ``summary.json`` or ``config.yaml``
raise :class:`DataError`; a missing ``model.npz`` raises :class:`CheckpointError`, a
corrupt one :class:`CheckpointCorrupt`; a file that cannot be written raises
:class:`CheckpointError`. Every message names the file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import TypeVar

from fedstrata.core import FloatVector, ParamSpec
from fedstrata.errors import CheckpointError, ConfigError, DataError
from fedstrata.monitoring import _alerts_sql, _device_sql, _fedeval_sql, _resume_sql, _schema
from fedstrata.monitoring._alert import Alert
from fedstrata.monitoring._atomic import atomic_write_text
from fedstrata.monitoring._model import write_model
from fedstrata.monitoring._runstore_read import RunReader
from fedstrata.monitoring.devices import RoundDetail
from fedstrata.monitoring.events import (
    ClientFailure,
    MetricEvent,
    RoundMetrics,
    RunFinished,
    RunStarted,
    RunStatus,
    RunTotals,
)
from fedstrata.monitoring.fedeval import FedEvalMetrics
from fedstrata.monitoring.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    build_summary,
)

__all__ = ["RunStore"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode={'rwc' if create else 'rw'}"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    if create:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            logger.warning("%s: WAL mode unavailable (journal_mode=%s)", path, mode)
        conn.execute("PRAGMA synchronous=NORMAL")
    else:
        conn.execute("PRAGMA query_only=ON")
    return conn


class RunStore(RunReader):
    """One run's directory: a metrics :class:`Sink` when created, a reader when opened.

    Use :meth:`create` to write a new run (as a context manager, or call :meth:`close`)
    and :meth:`open` to read one. Both give the reading methods
    (:class:`~fedstrata.monitoring._runstore_read.RunReader`); only a created store
    accepts events and :meth:`save_model`. Safe to share between threads.
    """

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, *, writable: bool) -> None:
        """Prefer :meth:`create` or :meth:`open`; this wraps an open connection."""
        super().__init__(run_dir, conn)
        self._writable = writable
        self._pending: list[ClientFailure] = []
        self._detail: RoundDetail | None = None  # the next round's per-device rows
        self._totals = RunTotals()
        self._started: RunStarted | None = None
        self._finished = False

    @classmethod
    def create(cls, run_dir: Path) -> RunStore:
        """Start a new run store in ``run_dir`` (created if missing).

        Raises:
            ConfigError: ``run_dir`` already holds a run's metrics.
            CheckpointError: ``run_dir`` could not be created.
            DataError: the metrics database could not be created.
        """
        metrics = run_dir / METRICS_FILE
        if metrics.exists():
            raise ConfigError(
                f"RunStore.create: {metrics} exists; a run directory holds one run "
                "(use new_run_dir for a fresh one)"
            )
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"RunStore.create: cannot create {run_dir}: {exc}") from exc
        store = cls(run_dir, cls._connect_or_raise(metrics, create=True), writable=True)
        try:
            with store._db("create the schema"):
                _schema.create_schema(store._conn)
        except BaseException:
            store._closed = True
            store._conn.close()
            raise
        return store

    @classmethod
    def open(cls, run_dir: Path) -> RunStore:
        """Open an existing run for reading (a finished run or one still being written).

        Raises:
            DataError: ``run_dir`` or its ``metrics.sqlite`` is missing, not a SQLite
                database, or not a fedstrata run store (names the file).
        """
        if not run_dir.is_dir():
            raise DataError(f"run directory {run_dir} does not exist")
        metrics = run_dir / METRICS_FILE
        if not metrics.is_file():
            raise DataError(f"{run_dir} is not a run directory: {METRICS_FILE} is missing")
        store = cls(run_dir, cls._connect_or_raise(metrics, create=False), writable=False)
        try:
            store._check_schema()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def reopen(cls, run_dir: Path, rounds_kept: int) -> RunStore:
        """Reopen an interrupted run to continue it after ``rounds_kept`` rounds.

        Records of later rounds (written before a crash, after the checkpoint the
        run resumes from) are deleted; the resumed run records them again.

        Raises:
            DataError: ``run_dir`` is not a run store of this schema, or its meta lacks
                the run's id, clients or parameters.
        """
        with cls.open(run_dir) as reader, reader._db("read the run's meta"):  # checks the schema
            started = _resume_sql.started_event(reader._conn, reader.config_text())
        store = cls(run_dir, _connect(run_dir / METRICS_FILE, create=True), writable=True)
        with store._db("truncate rounds after the checkpoint"):
            _resume_sql.truncate_after(store._conn, rounds_kept, run_dir)
            _schema.create_schema(store._conn)  # an older store gains this version's tables
        store._started = started
        for metrics in store.rounds():
            store._totals.add(metrics)
        for event in store.fed_evals():
            store._totals.add_fed_eval(event)
        return store

    @staticmethod
    def _connect_or_raise(path: Path, *, create: bool) -> sqlite3.Connection:
        try:
            return _connect(path, create=create)
        except sqlite3.Error as exc:
            raise DataError(f"{path}: cannot open the metrics database: {exc}") from exc

    def _check_schema(self) -> None:
        where = f"{self._dir / METRICS_FILE}: not a fedstrata run store"
        with self._db("read the schema"):
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
            tables = {row[0] for row in self._conn.execute(sql)}
            missing = sorted({"meta", "rounds", "client_failures"} - tables)
            if missing:
                raise DataError(f"{where} (missing tables {missing})")
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
            version = dict(rows).get("schema_version")
            columns = tuple(r[1] for r in self._conn.execute("PRAGMA table_info(rounds)"))
        self._has_devices = tables >= _device_sql.DEVICE_TABLES
        current = version in {"3", "4", "5"} and columns == _schema.ROUND_COLUMNS
        legacy = version in {"1", "2"} and columns == _schema.LEGACY_ROUND_COLUMNS
        if not (current or legacy):
            raise DataError(
                f"{where} of schema version {_schema.SCHEMA_VERSION} "
                f"(found version {version!r}, columns {columns})"
            )
        self._columns = columns

    # --- writing (Sink) -------------------------------------------------------------

    def _require_writable(self, action: str) -> None:
        if self._closed:
            raise DataError(f"RunStore at {self._dir} is closed; cannot {action}")
        if not self._writable:
            raise DataError(f"RunStore at {self._dir} was opened read-only; cannot {action}")
        if self._finished and action != "save the model":
            raise DataError(f"RunStore at {self._dir}: run already finished; cannot {action}")

    def emit(self, event: MetricEvent) -> None:
        """Store one event; a round and the failures reported before it commit together.

        Raises:
            DataError: read-only or closed store, a second RunStarted, a round stored
                twice, an event after RunFinished, or an unknown event type.
            CheckpointError: ``config.yaml`` or ``summary.json`` could not be written.
        """
        self._require_writable(f"store {type(event).__name__}")
        if isinstance(event, RoundMetrics):
            self._on_round(event)
        elif isinstance(event, ClientFailure):
            with self._lock:
                self._pending.append(event)
        elif isinstance(event, RoundDetail):
            with self._lock:
                self._detail = event
        elif isinstance(event, RunStarted):
            self._on_started(event)
        elif isinstance(event, RunFinished):
            self._on_finished(event)
        elif isinstance(event, FedEvalMetrics):
            self._on_fed_eval(event)
        elif isinstance(event, Alert):
            with self._db(f"store alert {event.rule}"), self._conn:
                _alerts_sql.insert_alert(self._conn, event)
        else:
            raise DataError(f"RunStore cannot store a {type(event).__name__}")

    def _on_started(self, event: RunStarted) -> None:
        with self._lock:
            if self._started is not None:
                raise DataError(
                    f"RunStore at {self._dir}: run {self._started.run_id!r} "
                    f"already started; got RunStarted({event.run_id!r})"
                )
            atomic_write_text(self._dir / CONFIG_FILE, event.config_yaml)
            meta = [
                ("run_id", event.run_id),
                ("num_clients", str(event.num_clients)),
                ("num_params", str(event.num_params)),
            ]
            with self._db("store RunStarted"), self._conn:
                self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)
            self._started = event

    def _on_round(self, metrics: RoundMetrics) -> None:
        cols = ", ".join(_schema.ROUND_COLUMNS)
        marks = ", ".join("?" * len(_schema.ROUND_COLUMNS))
        with self._db(f"store round {metrics.round_idx}"):
            try:
                with self._conn:
                    self._insert_pending()
                    self._conn.execute(
                        f"INSERT INTO rounds ({cols}) VALUES ({marks})",
                        _schema.round_to_row(metrics),
                    )
                    if self._detail is not None and self._detail.round_idx == metrics.round_idx:
                        _device_sql.insert_detail(self._conn, self._detail)
            except sqlite3.IntegrityError as exc:
                raise DataError(
                    f"{self._dir / METRICS_FILE}: round {metrics.round_idx} is already stored"
                ) from exc
            self._pending.clear()
            self._detail = None
            self._totals.add(metrics)

    def _on_fed_eval(self, event: FedEvalMetrics) -> None:
        with self._db(f"store the federated evaluation of round {event.round_idx}"):
            try:
                with self._conn:
                    _fedeval_sql.insert_fed_eval(self._conn, event)
            except sqlite3.IntegrityError as exc:
                raise DataError(f"{self._dir / METRICS_FILE}: federated evaluation of round "
                                f"{event.round_idx} is already stored") from exc  # fmt: skip
            self._totals.add_fed_eval(event)

    def _insert_pending(self) -> None:
        self._conn.executemany(
            "INSERT INTO client_failures (round_idx, client_id, reason) VALUES (?, ?, ?)",
            [_schema.failure_to_row(f) for f in self._pending],
        )

    def _flush_pending(self) -> None:
        if self._pending:
            with self._db("store client failures"), self._conn:
                self._insert_pending()
            self._pending.clear()

    def _on_finished(self, event: RunFinished) -> None:
        with self._lock:
            self._flush_pending()
            self._write_summary(event)
            self._finished = True

    def _write_summary(self, event: RunFinished) -> None:
        summary = build_summary(event, self._totals, self._started, self.failure_count())
        text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
        atomic_write_text(self._dir / SUMMARY_FILE, text)

    def save_model(self, spec: ParamSpec, params: FloatVector) -> None:
        """Write the final model to ``model.npz`` atomically.

        Raises:
            ShapeError: ``params`` does not match ``spec``.
            DataError: the store was opened read-only.
            CheckpointError: the file could not be written.
        """
        self._require_writable("save the model")
        write_model(self._dir / MODEL_FILE, spec, params)

    def close(self) -> None:
        """Flush pending failures; if no RunFinished came, write an INTERRUPTED summary.

        Idempotent. The database connection is closed even if flushing fails.

        Raises:
            DataError: pending failures could not be stored.
            CheckpointError: ``summary.json`` could not be written.
        """
        with self._lock:
            if self._closed:
                return
            try:
                if self._writable and not self._finished:
                    self._flush_pending()
                    run_id = self._dir.name if self._started is None else self._started.run_id
                    reason = "the store was closed before RunFinished"
                    self._write_summary(
                        self._totals.finish(run_id, RunStatus.INTERRUPTED, stop_reason=reason)
                    )
                    self._finished = True
            finally:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "writable" if self._writable else "read-only"
        return f"RunStore({str(self._dir)!r}, {mode})"
