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
from collections.abc import Sequence
from dataclasses import dataclass, field

from fedstrata.coordinator.events import RoundOutcome
from fedstrata.core.metrics import SystemStats
from fedstrata.monitoring.devices import STRAGGLER_FACTOR, DeviceRound, DeviceStatus

__all__ = ["SystemTally", "outcome_devices", "runtime_system"]


@dataclass
class _Device:
    download_s: float = 0.0
    upload_s: float = 0.0
    work: list[tuple[float, float, float]] = field(default_factory=list)  # start, s, FLOPs
    status: DeviceStatus = "failed"
    done_s: float | None = None  # when its update arrived (None: it never sent one)
    node: str = ""


def _recovery(failures: Sequence[float], accepts: Sequence[float]) -> tuple[float | None, ...]:
    """The first failure's time and the first acceptance at or after it (or None)."""
    failure = min(failures, default=None)
    if failure is None:
        return None, None
    return failure, min((t for t in accepts if t >= failure), default=None)


def _busy_s(work: list[tuple[float, float, float]], begin_s: float, end_s: float) -> float:
    """Seconds the training intervals cover in [``begin_s``, ``end_s``] (a tree's
    client may start a period's training while a late one still runs: counted once)."""
    total, reach = 0.0, -math.inf
    for start, seconds, _ in sorted(work):
        stop = min(start + seconds, end_s)
        begin = max(start, reach, begin_s)
        if stop > begin:
            total += stop - begin
            reach = stop
    return total


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
        self.legs(cid, seconds if not up else 0.0, seconds if up else 0.0)
        capacity = None if bandwidth_bps is None else bandwidth_bps / 8.0 * seconds
        self.link(nbytes, seconds, capacity, wait_s=wait_s, model=True)

    def link(
        self, nbytes: int, seconds: float, capacity_bytes: float | None, *,
        wait_s: float = 0.0, model: bool,
    ) -> None:  # fmt: skip
        """A transfer of ``nbytes`` over a link (a device's or a tree's tier link) that
        took ``seconds``, ``wait_s`` of them waiting for a shared link, in which the link
        could have carried ``capacity_bytes`` (None: unknown); ``model``: it carried one
        model or update (counted in the round's dense bytes)."""
        self._transfers += model
        self._link_bytes += nbytes
        self._transfer_s += seconds
        self._wait_s += wait_s
        if capacity_bytes is None or self._capacity is None:
            self._capacity = None
        else:
            self._capacity += capacity_bytes

    def legs(self, cid: int, download_s: float, upload_s: float) -> None:
        """Add to client ``cid``'s download and upload seconds (its links are tallied
        with :meth:`link`)."""
        row = self._row(cid)
        row.download_s += download_s
        row.upload_s += upload_s

    def trained(self, cid: int, start_s: float, seconds: float, flops: float) -> None:
        """Client ``cid`` trained from ``start_s`` for ``seconds`` doing ``flops`` (a
        tree's client may train several periods in a round)."""
        self._row(cid).work.append((start_s, seconds, flops))

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
        busy = {cid: _busy_s(row.work, self.start_s, end_s) for cid, row in self._rows.items()}
        flops = 0.0
        for row in self._rows.values():
            for start, seconds, work in row.work:  # training outside the round not counted
                done = min(start + seconds, end_s) - max(start, self.start_s)
                flops += work * max(done, 0.0) / seconds if seconds > 0 else 0.0
        peak = None if self.peak_flops is None else sum(self.peak_flops.values())
        failure, recovered = _recovery(self._failures, self._accepts)
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


def runtime_system(
    devices: int, dense_bytes: int, *, failed_at: Sequence[float], accepted_at: Sequence[float]
) -> SystemStats:
    """The runtime center's :class:`SystemStats`: the cohort, the dense bytes of its
    downloads and uploads, and when members failed and updates were accepted. The center
    does not see its clients' devices or links: busy and transfer seconds are NaN (not
    measurable) and FLOPs, peak and link capacity None, so the metrics built on them are
    None in the runtime."""
    failure, recovered = _recovery(failed_at, accepted_at)
    return SystemStats(
        devices=devices, dense_bytes=dense_bytes, busy_s=math.nan, transfer_s=math.nan,
        failure_at_s=failure, recovered_at_s=recovered,
        first_accept_s=min(accepted_at, default=None),
    )  # fmt: skip


def outcome_devices(outcome: RoundOutcome) -> tuple[DeviceRound, ...]:
    """Device rows from a round's outcome alone (the runtime center): each member's
    fate, a late one a straggler; its seconds are not measured (0) nor its
    utilization (NaN)."""
    fates: list[tuple[int, DeviceStatus]] = [(c, "accepted") for c in outcome.accepted]
    fates += [(c, "failed") for c, _ in outcome.failed]
    fates += [(c, "late") for c in outcome.late]
    return tuple(
        DeviceRound(c, fate, 0.0, 0.0, 0.0, straggler=fate == "late", utilization=math.nan)
        for c, fate in sorted(fates)
    )
