"""The per-device and per-node views: stragglers, the slowest devices, the heat map.

The run store keeps one row per selected device per round (10,000 devices x 1,000
rounds is ten million rows), so nothing here ships rows to the browser:

* the device tables come from the store's per-device totals
  (:meth:`RunStore.device_stats`), sorted server-side, the top N sent;
* the utilization heat map (:mod:`._heat`) is summed per device bin and round in SQL
  and accumulated incrementally, the store's older rounds read by a thread of its own;
* per-node ingress is summed from :meth:`RunStore.tier_stats`.

Everything is cached per snapshot version: a request between two rounds costs a
dictionary lookup.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Sequence

from fedstrata.monitoring.dashboard._heat import HeatMapReader
from fedstrata.monitoring.dashboard._source import RunSource, Snapshot
from fedstrata.monitoring.dashboard.models import DeviceRow, DevicesResponse, HeatMap, TierNode
from fedstrata.monitoring.devices import DeviceStats, TierIngress
from fedstrata.monitoring.runstore import RunStore

__all__ = ["STRAGGLER_SHARE", "DeviceViews", "device_rows"]

STRAGGLER_SHARE = 0.25
"""A device is shown as a straggler when it straggled in at least this share of the
rounds it was selected for (who straggled in a round:
:data:`~fedstrata.monitoring.devices.STRAGGLER_FACTOR`)."""


def _opt(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _is_straggler(d: DeviceStats) -> bool:
    return d.straggler_rounds > 0 and d.straggler_rounds >= STRAGGLER_SHARE * max(
        d.rounds_selected, 1
    )


def _mean_round_s(d: DeviceStats) -> float:
    """Mean compute + upload seconds per selected round (-inf: never measurable)."""
    mean_s = d.mean_compute_s + d.mean_upload_s
    return mean_s if math.isfinite(mean_s) else -math.inf


def _row(d: DeviceStats) -> DeviceRow:
    return DeviceRow(
        client_id=d.client_id,
        rounds_selected=d.rounds_selected,
        rounds_completed=d.rounds_completed,
        straggler_rounds=d.straggler_rounds,
        utilization_mean=_opt(d.utilization_mean),
        mean_compute_s=_opt(d.mean_compute_s),
        mean_upload_s=_opt(d.mean_upload_s),
        mean_round_s=_opt(d.mean_compute_s + d.mean_upload_s),
        tier=d.node or None,
        straggler=_is_straggler(d),
    )


def device_rows(
    stats: Sequence[DeviceStats], top: int
) -> tuple[int, list[DeviceRow], list[DeviceRow]]:
    """The straggler count, the ``top`` worst stragglers and the ``top`` slowest devices.

    Stragglers rank by rounds straggled (then fewer rounds selected); the slowest by
    mean compute + upload seconds per selected round. Only the rows sent are built.
    """
    stragglers = [d for d in stats if _is_straggler(d)]
    worst = heapq.nsmallest(
        top, stragglers, key=lambda d: (-d.straggler_rounds, d.rounds_selected, d.client_id)
    )
    slow = heapq.nsmallest(top, stats, key=lambda d: (-_mean_round_s(d), d.client_id))
    return len(stragglers), [_row(d) for d in worst], [_row(d) for d in slow]


class DeviceViews:
    """Per-device and per-node views of one :class:`RunSource`, cached per snapshot.

    Reads through a connection of its own, so a long first read of a large store (the
    heat map's ten million rows) never holds up the metric series' polls.

    Raises:
        DataError: the run's store cannot be opened.
    """

    def __init__(self, source: RunSource) -> None:
        self._store = RunStore.open(source.run_dir)
        self._lock = threading.Lock()
        self._stats: tuple[int, list[DeviceStats]] = (-1, [])
        self._nodes: tuple[int, list[TierNode]] = (-1, [])
        self._heat: HeatMapReader | None = None

    def view(self, snap: Snapshot, *, top: int, rows: int, cols: int) -> DevicesResponse:
        """Stragglers, the slowest ``top`` devices and the heat map (``rows x cols``).

        Raises:
            DataError: the store is unreadable.
        """
        with self._lock:
            stats = self._device_stats(snap)
            heat = self._heat_map(snap, rows, cols)
        count, stragglers, slowest = device_rows(stats, top)
        return DevicesResponse(
            devices=len(stats),
            straggler_count=count,
            stragglers=stragglers,
            slowest=slowest,
            heat=heat,
        )

    def _device_stats(self, snap: Snapshot) -> list[DeviceStats]:
        if self._stats[0] != snap.version:
            self._stats = (snap.version, self._store.device_stats())
        return self._stats[1]

    def _heat_map(self, snap: Snapshot, rows: int, cols: int) -> HeatMap | None:
        if self._heat is None:
            meta = self._store.meta()
            devices = int(meta.get("num_clients", 0)) or len(self._stats[1])
            self._heat = HeatMapReader(self._store.path, devices)
        self._heat.update(snap.cursor)
        return self._heat.heat_map(rows, cols)

    def close(self) -> None:
        """Stop the heat map's reader and close the connections (idempotent)."""
        if self._heat is not None:
            self._heat.close()
        self._store.close()

    def tier_nodes(self, snap: Snapshot) -> list[TierNode]:
        """Each aggregating node's totals over the run (none in a flat federation).

        Raises:
            DataError: the store is unreadable.
        """
        with self._lock:
            if self._nodes[0] != snap.version:
                self._nodes = (snap.version, _sum_nodes(self._store.tier_stats()))
            return self._nodes[1]


def _sum_nodes(rows: Sequence[TierIngress]) -> list[TierNode]:
    totals: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        acc = totals.setdefault((row.node, row.tier), [0, 0, 0, 0.0])
        acc[0] += 1
        acc[1] += row.ingress_bytes
        acc[2] += row.clients
        acc[3] += row.seconds
    order = {"center": 0, "region": 1, "edge": 2}
    ranked = sorted(totals.items(), key=lambda kv: (order.get(kv[0][1], 3), kv[0][0]))
    return [
        TierNode(node=node, tier=tier, rounds=int(a[0]), ingress_bytes=int(a[1]),
                 clients=int(a[2]), seconds=float(a[3]))
        for (node, tier), a in ranked
    ]  # fmt: skip
