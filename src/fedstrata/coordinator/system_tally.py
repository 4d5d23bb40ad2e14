"""What the devices and links did in a round, tallied as the driver learns it.

Every driver (the simulator's flat and tree drivers, the runtime center) feeds one
:class:`SystemTally` per round with what it knows of each selected client — its
transfers (bytes, seconds, the link's bandwidth when known, any wait for a shared
link), its training (start, seconds, FLOPs, the device's peak FLOP/s when known) and
its fate (accepted, late or failed, and when) — and at the round's end turns it into
the round's :class:`~fedstrata.core.metrics.SystemStats` and per-device
:class:`~fedstrata.monitoring.devices.DeviceRound` rows (:meth:`SystemTally.finish`).
The twelve federation metrics (:mod:`fedstrata.monitoring.catalogue`) are computed from
these; ``docs/monitoring.md`` gives the formulas. No I/O.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from fedstrata.core.metrics import SystemStats
from fedstrata.monitoring.devices import STRAGGLER_FACTOR, DeviceRound, DeviceStatus

__all__ = ["SystemTally"]


@dataclass
class _Device:
    download_s: float = 0.0
    upload_s: float = 0.0
    compute_start_s: float = 0.0
    compute_s: float = 0.0
    flops: float = 0.0
    status: DeviceStatus = "failed"
    done_s: float | None = None  # when its update arrived (None: it never sent one)
    node: str = ""


@dataclass
class SystemTally:
    """One round's device and link figures; see the module docstring.

    Args:
        start_s: the round's start on the run's clock.
        devices: the selected clients, in cohort order.
        dense_bytes: bytes of one dense float32 model or update on the wire.
        peak_flops: each selected client's peak FLOP/s (None: unknown).
    """

    start_s: float
    devices: tuple[int, ...]
    dense_bytes: int
    peak_flops: dict[int, float] | None = None
    _rows: dict[int, _Device] = field(default_factory=dict)
    _transfers: int = 0
    _link_bytes: int = 0
    _capacity: float | None = 0.0
    _transfer_s: float = 0.0
    _wait_s: float = 0.0
    _failures: list[float] = field(default_factory=list)
    _accepts: list[float] = field(default_factory=list)

    def _row(self, cid: int) -> _Device:
        return self._rows.setdefault(cid, _Device())

    def transfer(
        self, cid: int, nbytes: int, seconds: float, *, up: bool,
        bandwidth_bps: float | None = None, wait_s: float = 0.0,
    ) -> None:  # fmt: skip
        """A model download (``up=False``) or update upload of ``nbytes`` that took
        ``seconds``, ``wait_s`` of them waiting for a shared link; ``bandwidth_bps`` is
        the link's rate (None: unknown, so the round's link capacity is unknown)."""
        row = self._row(cid)
        if up:
            row.upload_s += seconds
        else:
            row.download_s += seconds
        self._transfers += 1
        self._link_bytes += nbytes
        self._transfer_s += seconds
        self._wait_s += wait_s
        if bandwidth_bps is None or self._capacity is None:
            self._capacity = None
        else:
            self._capacity += bandwidth_bps / 8.0 * seconds

    def trained(self, cid: int, start_s: float, seconds: float, flops: float) -> None:
        """Client ``cid`` trained from ``start_s`` for ``seconds`` doing ``flops``."""
        row = self._row(cid)
        row.compute_start_s, row.compute_s, row.flops = start_s, seconds, flops

    def accepted(self, cid: int, at_s: float, node: str = "") -> None:
        """Client ``cid``'s update arrived at ``at_s`` and was folded."""
        row = self._row(cid)
        row.status, row.done_s, row.node = "accepted", at_s, node
        self._accepts.append(at_s)

    def failed(self, cid: int, at_s: float, *, late: bool = False, node: str = "") -> None:
        """Client ``cid`` failed (or, ``late``, missed the deadline) at ``at_s``."""
        row = self._row(cid)
        row.status, row.node = ("late" if late else "failed"), node
        if late:
            row.done_s = at_s
        self._failures.append(at_s)

    def finish(self, end_s: float) -> tuple[SystemStats, tuple[DeviceRound, ...]]:
        """The round's system record and device rows, the round having ended at ``end_s``
        (training past the end, by a late client, is not counted as busy)."""
        round_s = max(end_s - self.start_s, 0.0)
        busy = {cid: self._busy(row, end_s) for cid, row in self._rows.items()}
        flops = sum(
            r.flops * (busy[c] / r.compute_s) for c, r in self._rows.items() if r.compute_s > 0
        )
        peak = None if self.peak_flops is None else sum(self.peak_flops.values())
        failure = min(self._failures, default=None)
        recovered = None if failure is None else min(
            (t for t in self._accepts if t >= failure), default=None
        )  # fmt: skip
        stats = SystemStats(
            devices=len(self.devices),
            dense_bytes=self.dense_bytes * self._transfers,
            busy_s=sum(busy.values()),
            transfer_s=self._transfer_s,
            contention_s=self._wait_s,
            flops=flops,
            peak_flops=peak,
            link_bytes=self._link_bytes,
            link_capacity_bytes=self._capacity if self._transfers else None,
            failure_at_s=failure,
            recovered_at_s=recovered,
            first_accept_s=min(self._accepts, default=None),
        )
        return stats, self._device_rows(busy, round_s)

    @staticmethod
    def _busy(row: _Device, end_s: float) -> float:
        return max(0.0, min(row.compute_s, end_s - row.compute_start_s))

    def _device_rows(self, busy: dict[int, float], round_s: float) -> tuple[DeviceRound, ...]:
        spans = {c: r.done_s - self.start_s for c, r in self._rows.items() if r.done_s is not None}
        median = statistics.median(spans.values()) if spans else 0.0
        rows = []
        for cid in self.devices:
            r = self._rows.get(cid, _Device())
            slow = cid in spans and spans[cid] > STRAGGLER_FACTOR * median
            util = busy.get(cid, 0.0) / round_s if round_s > 0 else math.nan
            late = r.status == "late"
            row = DeviceRound(
                cid, r.status, r.download_s, busy.get(cid, 0.0), r.upload_s,
                straggler=late or slow, utilization=util, node=r.node,
            )  # fmt: skip
            rows.append(row)
        return tuple(rows)
