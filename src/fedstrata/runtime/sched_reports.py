"""What a client agent tells the center's scheduler, on the wire (no policy here).

:class:`DeviceReport` (its device profile, in its ``Hello``) and :class:`RoundTimings`
(a round as it measured it, with its update); :mod:`fedstrata.runtime.scheduling`
reads them. Kept apart so that the runtime imports the scheduler (and its registry's
SQLAlchemy) only when a configuration schedules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedstrata.errors import DataError

if TYPE_CHECKING:
    from fedstrata.scheduling import DeviceMeasurement, DeviceProfiles

__all__ = ["DeviceReport", "PartialWork", "RoundTimings"]


@dataclass(frozen=True)
class DeviceReport:
    """A client's device, as it reports it to the center (the registry's columns).

    Raises:
        DataError: a value out of the registry's ranges.
    """

    cpu_score: float
    memory_gb: float
    network_latency_ms: float
    uplink_mbps: float
    downlink_mbps: float
    bf16_speedup: float = 1.0
    fp16_speedup: float = 1.0
    local_examples: int = 0

    def __post_init__(self) -> None:
        self.profiles(0)  # validates every column
        if self.local_examples < 0:
            raise DataError(f"DeviceReport.local_examples must be >= 0, got {self.local_examples}")

    def profiles(self, device_id: int) -> DeviceProfiles:
        """The registry row of device ``device_id`` (always online: it connected)."""
        from fedstrata.scheduling.records import DeviceProfiles  # deferred: SQLAlchemy

        cols = (
            self.cpu_score, self.memory_gb, self.network_latency_ms, self.uplink_mbps,
            self.downlink_mbps, 1.0, self.bf16_speedup, self.fp16_speedup,
        )  # fmt: skip
        return DeviceProfiles(np.array([device_id]), *(np.array([float(c)]) for c in cols))

    @classmethod
    def of(
        cls,
        measurement: DeviceMeasurement,
        *,
        uplink_mbps: float,
        downlink_mbps: float,
        latency_ms: float,
        local_examples: int,
    ) -> DeviceReport:
        """A ``fedstrata device bench`` measurement with the link figures (configured:
        ``devices.uplink_mbps``, ``downlink_mbps``; the latency a measured RTT's half
        when the measurement has one, else ``devices.latency_ms``)."""
        latency = measurement.latency_ms if measurement.rtt_ms is not None else latency_ms
        return cls(
            measurement.cpu_score, measurement.memory_available_gb, latency, uplink_mbps,
            downlink_mbps, measurement.bf16_speedup, measurement.fp16_speedup, local_examples,
        )  # fmt: skip


@dataclass(frozen=True)
class RoundTimings:
    """What a client measured in one round: seconds downloading and training, the
    examples it trained and (partial work) the local steps it completed (None: it did
    not say, so its whole plan)."""

    download_s: float
    compute_s: float
    examples: int
    steps: int | None = None

    def __post_init__(self) -> None:
        ok = all(math.isfinite(v) and v >= 0 for v in (self.download_s, self.compute_s))
        if not ok or self.examples < 0 or (self.steps is not None and self.steps < 0):
            raise DataError(f"RoundTimings must be finite and >= 0, got {self}")


@dataclass(frozen=True)
class PartialWork:
    """A task's terms for partial work (the center settles it; docs/runtime.md).

    The client trains step by step against the task's deadline, stops when its time is
    up and reports the steps it completed; work below ``min_fraction`` of the assigned
    steps (or none) is dropped, as the simulator's straggler. ``weighted``: the update
    counts with ``weight * done / assigned`` (off under differential privacy, where
    every accepted update weighs the same, as in the simulator); under secure
    aggregation the client folds that factor into its weight before masking.

    Raises:
        DataError: ``min_fraction`` outside [0, 1].
    """

    min_fraction: float = 0.0
    weighted: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.min_fraction <= 1:
            raise DataError(f"PartialWork.min_fraction must be in [0, 1], got {self.min_fraction}")
