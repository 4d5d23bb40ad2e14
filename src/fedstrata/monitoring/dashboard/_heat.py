"""The device-utilization heat map: summed in SQL, accumulated incrementally, and the
store's history read newest-first by a thread of its own.

The store keeps one row per selected device per round: ten million rows for 10,000
devices and 1,000 rounds, several seconds to scan on a loaded machine. So
:class:`HeatMapReader` never makes a request wait for that: a request folds only the
rounds stored since the last one (one round's rows), while a background thread reads
the older rounds in chunks of about ``chunk_s`` seconds, newest first, so the map
appears at once and fills in towards round 0 (``HeatMap.complete`` tells when it has).
Only per-bin sums leave SQLite (:meth:`RunStore.utilization_by_bin`).

Ownership: the reader owns its two read-only connections and its thread;
:meth:`HeatMapReader.close` stops the thread (between chunks) and closes them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedstrata.errors import DataError
from fedstrata.monitoring.dashboard._downsample import bin_edges
from fedstrata.monitoring.dashboard.models import HeatMap
from fedstrata.monitoring.runstore import RunStore

__all__ = ["DEVICE_BINS", "HeatAccumulator", "HeatMapReader"]

logger = logging.getLogger(__name__)

DEVICE_BINS = 200
"""Device bins the heat map accumulates (a request may ask for fewer rows)."""
_FIRST_ROUNDS = 8
"""Rounds the first request reads itself, so the map is never empty when data exist."""


def _opt(value: float) -> float | None:
    return value if math.isfinite(value) else None


class HeatAccumulator:
    """Sums and counts of device utilization per (device bin, round), grown per round.

    Device bins are ``width`` consecutive client ids (``ceil(devices / device_bins)``),
    so the store can sum a round's rows per bin in SQL
    (:meth:`RunStore.utilization_by_bin`) and only the sums travel.

    Args:
        devices: client ids are 0 .. devices - 1 (larger ids add bins).
        device_bins: bins over the client ids (at most).
    """

    def __init__(self, devices: int, device_bins: int = DEVICE_BINS) -> None:
        self.devices = max(devices, 1)
        self.width = -(-self.devices // max(device_bins, 1))
        n_bins = -(-self.devices // self.width)
        self.sums = np.zeros((n_bins, 0))
        self.counts = np.zeros((n_bins, 0))

    def add(self, binned: Sequence[tuple[int, int, float, int]], through: int) -> None:
        """Fold rows ``(round, bin, utilization sum, count)`` of rounds up to ``through``
        (a round without rows still widens the map: its cells are empty)."""
        arr = np.asarray(binned, dtype=np.float64).reshape(-1, 4)
        rounds, bins = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
        n_bins = max(self.sums.shape[0], int(bins.max()) + 1 if len(bins) else 0)
        n_rounds = max(
            self.sums.shape[1], through + 1, int(rounds.max()) + 1 if len(rounds) else 0
        )
        if (n_bins, n_rounds) != self.sums.shape:
            if n_bins > self.sums.shape[0]:  # client ids beyond the run's count
                self.devices = n_bins * self.width
            grow = ((0, n_bins - self.sums.shape[0]), (0, n_rounds - self.sums.shape[1]))
            self.sums, self.counts = np.pad(self.sums, grow), np.pad(self.counts, grow)
        np.add.at(self.sums, (bins, rounds), arr[:, 2])
        np.add.at(self.counts, (bins, rounds), arr[:, 3])

    def heat_map(self, rows: int, cols: int, *, complete: bool = True) -> HeatMap | None:
        """The mean utilization over at most ``rows x cols`` cells (None: no data)."""
        n_bins, n_rounds = self.sums.shape
        if n_rounds == 0 or not self.counts.any():
            return None
        r_sel, c_sel = bin_edges(n_bins, rows), bin_edges(n_rounds, cols)
        sums = np.add.reduceat(np.add.reduceat(self.sums, r_sel, axis=0), c_sel, axis=1)
        counts = np.add.reduceat(np.add.reduceat(self.counts, r_sel, axis=0), c_sel, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return HeatMap(
            device_starts=[int(i) * self.width for i in r_sel],
            round_starts=[int(c) for c in c_sel],
            device_end=self.devices,
            round_end=n_rounds,
            values=[[_opt(float(v)) for v in row] for row in means],
            complete=complete,
        )


class HeatMapReader:
    """The heat map of one run store, kept current by :meth:`update` (see the module).

    Args:
        run_dir: the run directory (opened read-only, twice).
        devices: the run's client count (bins are sized for it).
        chunk_s: about how long one chunk of the history read takes.

    Raises:
        DataError: the store cannot be opened.
    """

    def __init__(self, run_dir: Path, devices: int, *, chunk_s: float = 0.25) -> None:
        self._acc = HeatAccumulator(devices)
        self._lock = threading.Lock()
        self._recent = RunStore.open(run_dir)
        self._history = RunStore.open(run_dir)
        self._chunk_s = chunk_s
        self._hi = -1  # rounds <= _hi are (being) read
        self._lo = -1  # the history thread has read the rounds in (_lo, first _hi]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: DataError | None = None

    def update(self, cursor: int) -> None:
        """Fold the rounds stored up to ``cursor``; the first call starts the history read.

        Raises:
            DataError: the store is unreadable.
        """
        if self._thread is None:  # the newest rounds now, the rest in the background
            after = max(cursor - _FIRST_ROUNDS, -1)
            binned = self._recent.utilization_by_bin(after, cursor, self._acc.width)
            with self._lock:
                self._acc.add(binned, through=cursor)
            self._hi, self._lo = cursor, after
            self._thread = threading.Thread(
                target=self._read_history, name="heat-map", daemon=True
            )
            self._thread.start()
        elif cursor > self._hi:
            binned = self._recent.utilization_by_bin(self._hi, cursor, self._acc.width)
            with self._lock:
                self._acc.add(binned, through=cursor)
            self._hi = cursor

    def heat_map(self, rows: int, cols: int) -> HeatMap | None:
        """The map as read so far (None: no utilization yet).

        Raises:
            DataError: reading the history failed.
        """
        if self._error is not None:
            raise self._error
        with self._lock:
            return self._acc.heat_map(rows, cols, complete=self._lo < 0)

    def _read_history(self) -> None:
        rounds = 8
        try:
            while self._lo >= 0 and not self._stop.is_set():
                start = time.monotonic()
                after = max(self._lo - rounds, -1)
                binned = self._history.utilization_by_bin(after, self._lo, self._acc.width)
                with self._lock:
                    self._acc.add(binned, through=self._lo)
                    self._lo = after
                took = max(time.monotonic() - start, 1e-3)
                rounds = max(1, min(4 * rounds, int(rounds * self._chunk_s / took)))
        except DataError as exc:
            logger.warning("dashboard heat map: %s", exc)
            self._error = exc

    def close(self) -> None:
        """Stop the history read and close the connections (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._recent.close()
        self._history.close()
