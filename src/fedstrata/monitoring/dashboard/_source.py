"""A run directory read while it may still be written, refreshed incrementally.

:class:`RunSource` owns one read-only :class:`~fedstrata.monitoring.RunStore`
(SQLite WAL: the simulator or the center keeps writing while it reads). Each
:meth:`RunSource.snapshot` reads only the rounds stored after the last one it holds,
recomputes the metric rows and alerts when rounds arrived, and hands out an immutable
:class:`Snapshot`; concurrent requests share one refresh (a lock, and at most one
read per ``min_interval_s``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedstrata.errors import DataError
from fedstrata.monitoring.dashboard._catalogue import Alert, Catalogue, alert_rows
from fedstrata.monitoring.dashboard.models import Budget
from fedstrata.monitoring.events import RoundMetrics
from fedstrata.monitoring.rundir import METRICS_FILE, SUMMARY_FILE
from fedstrata.monitoring.runstore import RunStore

__all__ = ["RunSource", "Snapshot", "find_run_dir"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """The run as last read: its rounds, one metric row per round, the alerts.

    Attributes:
        rounds: every stored round, by index.
        rows: the catalogue's metric values, one mapping per round (same order).
        alerts: the alerts the rules raise over ``rows``.
        finished: the run wrote its summary (no more rounds will come).
        version: increases whenever new rounds arrived (a cache key).
    """

    rounds: tuple[RoundMetrics, ...]
    rows: tuple[dict[str, float | None], ...]
    alerts: tuple[Alert, ...]
    finished: bool
    version: int

    @property
    def cursor(self) -> int:
        """The last round held (-1: none yet)."""
        return self.rounds[-1].round_idx if self.rounds else -1


_EMPTY = Snapshot(rounds=(), rows=(), alerts=(), finished=False, version=0)


def find_run_dir(path: Path) -> Path:
    """``path`` if it is a run directory, else its newest child that is one.

    A parent such as ``runs/`` (``output.dir``) resolves to the most recently
    modified run directory in it, so ``--live runs/`` follows the run just started.

    Raises:
        DataError: ``path`` does not exist or holds no run directory.
    """
    if (path / METRICS_FILE).is_file():
        return path
    if not path.is_dir():
        raise DataError(f"run directory {path} does not exist")
    runs = [p for p in path.iterdir() if (p / METRICS_FILE).is_file()]
    if not runs:
        raise DataError(f"{path} is not a run directory and holds none ({METRICS_FILE} missing)")
    return max(runs, key=lambda p: (p / METRICS_FILE).stat().st_mtime)


class RunSource:
    """Reads one run for the dashboard; safe to share between request threads.

    Args:
        store: the run, opened read-only (:meth:`RunStore.open`); closed by :meth:`close`.
        catalogue: the metrics and alert rules to compute.
        budget: the privacy budget whose plan the ``privacy_plan_ratio`` rules watch.
        min_interval_s: reads at most this often; requests in between share a snapshot.
        clock: monotonic seconds (injected in tests).
    """

    def __init__(
        self,
        store: RunStore,
        catalogue: Catalogue,
        *,
        budget: Budget | None = None,
        min_interval_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.budget = budget
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snap = _EMPTY
        self._read_at = -float("inf")

    @classmethod
    def open(
        cls, run_dir: Path, catalogue: Catalogue, *, budget: Budget | None = None
    ) -> RunSource:
        """Open ``run_dir`` (or the newest run in it, :func:`find_run_dir`) read-only.

        Raises:
            DataError: no run directory there, or its store is unreadable.
        """
        return cls(RunStore.open(find_run_dir(run_dir)), catalogue, budget=budget)

    @property
    def run_dir(self) -> Path:
        """The run directory read."""
        return self.store.path

    def snapshot(self) -> Snapshot:
        """The run now: reads the rounds stored since the last read (if due).

        Raises:
            DataError: the store became unreadable or holds invalid rows.
        """
        with self._lock:
            now = self._clock()
            if now - self._read_at >= self._min_interval_s:
                self._snap = self._refresh(self._snap)
                self._read_at = now
            return self._snap

    def _refresh(self, snap: Snapshot) -> Snapshot:
        finished = snap.finished or (self.run_dir / SUMMARY_FILE).is_file()
        new = self.store.rounds(since=snap.cursor)
        if not new:
            return snap if finished == snap.finished else _replace_finished(snap, finished)
        rounds = snap.rounds + tuple(new)
        rows = tuple(self.catalogue.compute(rounds))
        if len(rows) != len(rounds):
            raise DataError(f"metric catalogue returned {len(rows)} rows for {len(rounds)} rounds")
        planned = None if self.budget is None else self.budget.planned_rounds
        inputs = alert_rows(rounds, rows, planned)
        alerts = tuple(self.catalogue.alerts(self.catalogue.rules, inputs))
        logger.debug("dashboard read rounds %d..%d", new[0].round_idx, new[-1].round_idx)
        return Snapshot(rounds, rows, alerts, finished, snap.version + 1)

    def close(self) -> None:
        """Close the store (idempotent)."""
        self.store.close()


def _replace_finished(snap: Snapshot, finished: bool) -> Snapshot:
    return Snapshot(snap.rounds, snap.rows, snap.alerts, finished, snap.version + 1)
