"""Scheduling metrics for ``RoundMetrics.schedule``: utilization, idle time, throughput.

A device is *busy* while it downloads, trains and uploads; in a synchronous round it
then idles until the round ends. Utilization is busy time over the round's wall time
(simulated seconds), so a round sized by :func:`~fedstrata.scheduling.allocate_work`
pushes every device's utilization toward 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import DataError

__all__ = ["RoundUtilization", "device_utilization", "round_utilization"]

F64 = NDArray[np.float64]


def device_utilization(busy_s: F64, round_s: float) -> F64:
    """Per-device busy time over the round's duration, clipped to [0, 1].

    Raises:
        DataError: ``round_s`` <= 0 or negative busy times.
    """
    busy = np.asarray(busy_s, dtype=np.float64)
    if not round_s > 0:
        raise DataError(f"device_utilization round_s must be > 0, got {round_s}")
    if (busy < 0).any():
        raise DataError("device_utilization busy_s must be >= 0")
    return np.clip(busy / round_s, 0.0, 1.0)


@dataclass(frozen=True)
class RoundUtilization:
    """How well a round used its devices.

    Attributes:
        mean_utilization: mean over devices of busy / round time, in [0, 1].
        min_utilization: the least-used device's utilization.
        mean_idle_s: mean seconds a device waited for the round to end.
        total_idle_s: device-seconds spent idle.
        throughput_eps: examples trained per simulated second of the round.
        devices: devices counted.
    """

    mean_utilization: float
    min_utilization: float
    mean_idle_s: float
    total_idle_s: float
    throughput_eps: float
    devices: int


def round_utilization(
    busy_s: F64, round_s: float, examples: NDArray[np.int64] | F64
) -> RoundUtilization:
    """Summarise a round from each device's busy seconds and examples trained.

    Raises:
        DataError: ``round_s`` <= 0, negative times or examples, or mismatched lengths.
    """
    util = device_utilization(busy_s, round_s)
    work = np.asarray(examples, dtype=np.float64)
    if work.shape != util.shape or (work < 0).any():
        raise DataError("round_utilization: examples must be >= 0, one per device")
    idle = round_s * (1.0 - util)
    if util.size == 0:
        return RoundUtilization(float("nan"), float("nan"), 0.0, 0.0, 0.0, 0)
    return RoundUtilization(
        float(util.mean()),
        float(util.min()),
        float(idle.mean()),
        float(idle.sum()),
        float(work.sum() / round_s),
        int(util.size),
    )
