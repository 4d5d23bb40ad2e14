"""Column-wise records exchanged with the device registry (NumPy only, no SQL).

Units: ``cpu_score`` is the device's sustained training throughput in GFLOP/s (so
``flops = cpu_score * 1e9``), memory in GB, ``network_latency_ms`` one-way latency in
milliseconds, bandwidths in Mbit/s, ``availability`` the probability of being online;
``bf16_speedup`` / ``fp16_speedup`` the device's training throughput at that autocast
precision relative to float32 (1.0: no speedup; ``cpu_score`` is the float32 figure).
Work is counted in training examples (samples, with repetition).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.timing import precision_speedup
from fedstrata.errors import ConfigError, DataError

__all__ = [
    "AllocationCandidates",
    "DeviceProfiles",
    "HistoryBatch",
    "ModelPartition",
    "WorkStatus",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

GFLOP = 1e9


class WorkStatus(IntEnum):
    """Outcome of one device's work in one round (stored by name in the registry)."""

    COMPLETED = 0
    PARTIAL = 1
    DROPPED = 2
    FAILED = 3


def _f64(name: str, value: object, n: int) -> F64:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise DataError(f"{name} has shape {arr.shape}, want ({n},)")
    return arr


def _i64(name: str, value: object, n: int | None = None) -> I64:
    arr = np.asarray(value)
    if n is not None and arr.ndim == 0:
        arr = np.full(n, arr)
    if n is not None and arr.shape != (n,):
        raise DataError(f"{name} has shape {arr.shape}, want ({n},)")
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{name} must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _one() -> F64:
    return np.ones(())


def _require(name: str, ok: bool, value: object, rule: str) -> None:
    if not ok:
        raise DataError(f"{name}={value!r} is invalid: {rule}")


@dataclass(frozen=True, eq=False)
class DeviceProfiles:
    """Profiles of many devices, one array per column; scalars broadcast.

    Attributes:
        device_id: unique non-negative ids.
        cpu_score: sustained training GFLOP/s, > 0.
        memory_gb: memory available for training, >= 0.
        network_latency_ms: one-way latency, >= 0.
        uplink_mbps: uplink bandwidth, > 0.
        downlink_mbps: downlink bandwidth, > 0.
        availability: probability of being online in a round, in (0, 1].
        bf16_speedup: throughput at bf16 relative to fp32, > 0 (default 1).
        fp16_speedup: throughput at fp16 relative to fp32, > 0 (default 1).
    """

    device_id: I64
    cpu_score: F64
    memory_gb: F64
    network_latency_ms: F64
    uplink_mbps: F64
    downlink_mbps: F64
    availability: F64
    bf16_speedup: F64 = field(default_factory=_one)
    fp16_speedup: F64 = field(default_factory=_one)

    def __post_init__(self) -> None:
        """Coerce and validate every column.

        Raises:
            DataError: wrong shapes, duplicate or negative ids, or out-of-range values.
        """
        ids = _i64("DeviceProfiles.device_id", self.device_id)
        n = ids.shape[0]
        object.__setattr__(self, "device_id", ids)
        for name in (
            "cpu_score",
            "memory_gb",
            "network_latency_ms",
            "uplink_mbps",
            "downlink_mbps",
            "availability",
            "bf16_speedup",
            "fp16_speedup",
        ):
            object.__setattr__(self, name, _f64(f"DeviceProfiles.{name}", getattr(self, name), n))
        _require("DeviceProfiles.device_id", bool((ids >= 0).all()), "negative", "must be >= 0")
        _require(
            "DeviceProfiles.device_id", np.unique(ids).size == n, "duplicates", "must be unique"
        )
        self._check_ranges()

    def _check_ranges(self) -> None:
        for name in ("cpu_score", "uplink_mbps", "downlink_mbps", "bf16_speedup", "fp16_speedup"):
            col = getattr(self, name)
            _require(f"DeviceProfiles.{name}", bool((col > 0).all()), _worst(col), "must be > 0")
        for name in ("memory_gb", "network_latency_ms"):
            col = getattr(self, name)
            _require(f"DeviceProfiles.{name}", bool((col >= 0).all()), _worst(col), "must be >= 0")
        av = self.availability
        ok = bool(((av > 0) & (av <= 1)).all())
        _require("DeviceProfiles.availability", ok, _worst(av), "must be in (0, 1]")

    def __len__(self) -> int:
        return int(self.device_id.shape[0])

    @property
    def flops(self) -> F64:
        """Training FLOP/s of each device."""
        return self.cpu_score * GFLOP

    def speedup(self, precision: str) -> F64:
        """Each device's speed factor at ``precision`` (ones under ``fp32``).

        Raises:
            ConfigError: not ``fp32``, ``bf16`` or ``fp16``.
        """
        return precision_speedup(precision, self.bf16_speedup, self.fp16_speedup)

    def take(self, index: NDArray[np.intp]) -> DeviceProfiles:
        """The profiles at positions ``index``."""
        return DeviceProfiles(
            self.device_id[index],
            self.cpu_score[index],
            self.memory_gb[index],
            self.network_latency_ms[index],
            self.uplink_mbps[index],
            self.downlink_mbps[index],
            self.availability[index],
            self.bf16_speedup[index],
            self.fp16_speedup[index],
        )


def _worst(col: F64) -> float:
    """The first value that breaks a rule, for error messages (NaN first)."""
    bad = col[~np.isfinite(col)] if not np.isfinite(col).all() else np.sort(col)
    return float(bad[0]) if bad.size else float("nan")


@dataclass(frozen=True)
class ModelPartition:
    """A piece of the model a device may train (e.g. a sub-model of given width).

    Attributes:
        partition_id: unique id, >= 0.
        required_memory_gb: memory a device needs to train it, >= 0.
        compute_intensity: relative FLOPs per example (1.0 = the full model), > 0.
        name: optional label.
    """

    partition_id: int
    required_memory_gb: float
    compute_intensity: float
    name: str = ""

    def __post_init__(self) -> None:
        if self.partition_id < 0:
            raise ConfigError(f"ModelPartition.partition_id must be >= 0, got {self.partition_id}")
        if not self.required_memory_gb >= 0:
            raise ConfigError(
                f"ModelPartition.required_memory_gb must be >= 0, got {self.required_memory_gb}"
            )
        if not self.compute_intensity > 0:
            raise ConfigError(
                f"ModelPartition.compute_intensity must be > 0, got {self.compute_intensity}"
            )


@dataclass(frozen=True, eq=False)
class HistoryBatch:
    """Per-round history rows, column-wise: what each device was given and did.

    Attributes:
        device_id: the device of each row.
        round_idx: the round of each row (>= 0).
        assigned_work: examples assigned (>= 1).
        completed_work: examples done (0 .. assigned).
        predicted_s: predicted training seconds (NaN when none).
        actual_s: measured training seconds (NaN when unknown, e.g. dropped).
        status: :class:`WorkStatus` codes.
    """

    device_id: I64
    round_idx: I64
    assigned_work: I64
    completed_work: I64
    predicted_s: F64
    actual_s: F64
    status: NDArray[np.int8]

    def __post_init__(self) -> None:
        """Coerce and validate every column.

        Raises:
            DataError: wrong shapes, negative ids or rounds, or inconsistent work.
        """
        ids = _i64("HistoryBatch.device_id", self.device_id)
        n = ids.shape[0]
        object.__setattr__(self, "device_id", ids)
        for name in ("round_idx", "assigned_work", "completed_work"):
            col = _i64(f"HistoryBatch.{name}", getattr(self, name), n)
            object.__setattr__(self, name, col)
        for name in ("predicted_s", "actual_s"):
            object.__setattr__(self, name, _f64(f"HistoryBatch.{name}", getattr(self, name), n))
        status = _i64("HistoryBatch.status", self.status, n).astype(np.int8)
        object.__setattr__(self, "status", status)
        self._check()

    def _check(self) -> None:
        _require(
            "HistoryBatch.round_idx", bool((self.round_idx >= 0).all()), "negative", "must be >= 0"
        )
        _require(
            "HistoryBatch.assigned_work",
            bool((self.assigned_work >= 1).all()),
            "below 1",
            "must be >= 1",
        )
        done_ok = (self.completed_work >= 0) & (self.completed_work <= self.assigned_work)
        _require(
            "HistoryBatch.completed_work",
            bool(done_ok.all()),
            "out of range",
            "must be in [0, assigned_work]",
        )
        codes = {int(s) for s in WorkStatus}
        _require(
            "HistoryBatch.status",
            set(np.unique(self.status).tolist()) <= codes,
            "unknown code",
            f"must be WorkStatus codes {sorted(codes)}",
        )
        _require(
            "HistoryBatch.actual_s",
            bool((~(self.actual_s < 0)).all()),
            "negative",
            "must be >= 0 or NaN",
        )

    def __len__(self) -> int:
        return int(self.device_id.shape[0])


@dataclass(frozen=True, eq=False)
class AllocationCandidates:
    """Result of the allocation query: (device, partition) pairs, best score first.

    Attributes:
        device_id: device of each pair.
        partition_id: partition of each pair (the device has enough memory for it).
        score: ``cpu_score / compute_intensity`` (higher trains the partition faster).
    """

    device_id: NDArray[np.int64]
    partition_id: NDArray[np.int64]
    score: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.device_id.shape[0])
