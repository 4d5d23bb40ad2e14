"""Device profiles: compute speed, memory, links and availability of every client.

Profiles are stored column-wise (one NumPy array per attribute) so a population of
millions costs a few dozen bytes per device. They are generated from distributions —
compute log-uniform over ``compute_spread`` (three orders of magnitude by default),
bandwidth log-normal around a median — or loaded from a CSV file with a header
``device_id,flops,memory_gb,uplink_mbps,downlink_mbps,latency_ms,availability`` and,
optionally, ``bf16_speedup,fp16_speedup``.

``flops`` is a device's float32 training throughput; ``bf16_speedup`` and
``fp16_speedup`` are its autocast training throughput at bfloat16 / float16 relative
to that (default 1.0: no speedup; below 1 where 16-bit is slower, e.g. float16 on most
CPUs). A table also holds the precision the run trains at (:meth:`ProfileTable.
at_precision`, ``fp32`` unless set), and its compute leg divides by that precision's
factor.

:meth:`ProfileTable.legs_s` applies the one device-timing model
(:mod:`fedstrata.core.timing`) to these profiles: the flat simulator, the asynchronous
simulator, the tree simulator's compute leg, the scheduled planner and ``fedstrata
plan`` all turn a client's work and bytes into simulated seconds through it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.timing import (
    PRECISIONS,
    compute_one_s,
    compute_s,
    precision_speedup,
    transfer_one_s,
    transfer_s,
)
from fedstrata.errors import ConfigError, DataError

__all__ = ["DeviceProfile", "ProfileDistribution", "ProfileTable"]

F64 = NDArray[np.float64]
COLUMNS = (
    "device_id",
    "flops",
    "memory_gb",
    "uplink_mbps",
    "downlink_mbps",
    "latency_ms",
    "availability",
)
SPEEDUP_COLUMNS = ("bf16_speedup", "fp16_speedup")  # optional in a CSV: 1.0 when absent


@dataclass(frozen=True)
class ProfileDistribution:
    """Parameters of generated profiles (see :class:`fedstrata.config.DevicesConfig`)."""

    flops_max: float = 2e10
    compute_spread: float = 1000.0
    uplink_mbps: float = 20.0
    downlink_mbps: float = 100.0
    bandwidth_sigma: float = 0.5
    latency_ms: float = 40.0
    availability: float = 1.0
    memory_gb: float = 4.0
    bf16_speedup: float = 1.0
    fp16_speedup: float = 1.0

    def __post_init__(self) -> None:
        if not (self.bf16_speedup > 0 and self.fp16_speedup > 0):
            raise ConfigError(
                f"bf16_speedup and fp16_speedup must be > 0, got {self.bf16_speedup}, "
                f"{self.fp16_speedup}"
            )
        if self.compute_spread < 1:
            raise ConfigError(f"compute_spread must be >= 1, got {self.compute_spread}")
        if not 0 < self.availability <= 1:
            raise ConfigError(f"availability must be in (0, 1], got {self.availability}")


@dataclass(frozen=True)
class DeviceProfile:
    """One device's row of a :class:`ProfileTable`."""

    device_id: int
    flops: float
    memory_gb: float
    uplink_bps: float
    downlink_bps: float
    latency_s: float
    availability: float
    bf16_speedup: float = 1.0
    fp16_speedup: float = 1.0


def _unset() -> F64:
    return np.ones(0)


@dataclass(frozen=True, eq=False)
class ProfileTable:
    """Column-wise profiles of a population; row ``i`` is client ``i``.

    ``bf16_speedup`` / ``fp16_speedup`` left out mean 1.0 for every device;
    ``precision`` is the run's resolved ``client.precision`` (see the module docstring).
    """

    flops: F64
    memory_gb: F64
    uplink_bps: F64
    downlink_bps: F64
    latency_s: F64
    availability: F64
    bf16_speedup: F64 = field(default_factory=_unset)
    fp16_speedup: F64 = field(default_factory=_unset)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        n = self.flops.shape[0]
        for name in SPEEDUP_COLUMNS:
            if getattr(self, name).shape == (0,) and n:
                object.__setattr__(self, name, np.ones(n))
        for name in ("memory_gb", "uplink_bps", "downlink_bps", "latency_s", "availability",
                     *SPEEDUP_COLUMNS):  # fmt: skip
            if getattr(self, name).shape != (n,):
                raise DataError(
                    f"ProfileTable.{name} has shape {getattr(self, name).shape}, want ({n},)"
                )
        if (
            (self.flops <= 0).any()
            or (self.uplink_bps <= 0).any()
            or (self.downlink_bps <= 0).any()
        ):
            raise DataError("ProfileTable: flops and bandwidths must be > 0")
        for name in SPEEDUP_COLUMNS:
            if not (getattr(self, name) > 0).all():
                raise DataError(f"ProfileTable.{name}: speed factors must be > 0")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"ProfileTable.precision must be one of {', '.join(PRECISIONS)}, "
                f"got {self.precision!r}"
            )

    def at_precision(self, precision: str) -> ProfileTable:
        """The same devices for a run that trains at ``precision`` (resolved, not auto).

        Raises:
            ConfigError: ``precision`` is not ``fp32``, ``bf16`` or ``fp16``.
        """
        return replace(self, precision=precision)

    @cached_property
    def speedup(self) -> F64:
        """Each device's speed factor at the table's precision (ones under ``fp32``;
        computed once per table: the per-client hot path reads it)."""
        return precision_speedup(self.precision, self.bf16_speedup, self.fp16_speedup)

    def __len__(self) -> int:
        return int(self.flops.shape[0])

    def row(self, i: int) -> DeviceProfile:
        return DeviceProfile(
            i,
            float(self.flops[i]),
            float(self.memory_gb[i]),
            float(self.uplink_bps[i]),
            float(self.downlink_bps[i]),
            float(self.latency_s[i]),
            float(self.availability[i]),
            float(self.bf16_speedup[i]),
            float(self.fp16_speedup[i]),
        )

    def legs_s(
        self,
        ids: NDArray[np.int64],
        examples: NDArray[np.int64] | NDArray[np.float64],
        flops_per_example: float,
        down_bytes: float | F64,
        up_bytes: float | F64,
    ) -> tuple[F64, F64, F64]:
        """Simulated (downlink, compute, uplink) seconds of clients ``ids``.

        ``downlink = latency + down_bytes * 8 / downlink_bps``, ``compute = examples *
        flops_per_example / (flops * speedup)`` (the factor at the table's precision),
        ``uplink = latency + up_bytes * 8 / uplink_bps``
        (:func:`~fedstrata.core.timing.transfer_s`,
        :func:`~fedstrata.core.timing.compute_s`; ``docs/simulator.md``); a client's
        update arrives ``sum`` of the three after the round starts. Byte counts may be
        scalars or one per client.
        """
        latency = self.latency_s[ids]
        down = transfer_s(latency, down_bytes, self.downlink_bps[ids])
        up = transfer_s(latency, up_bytes, self.uplink_bps[ids])
        compute = compute_s(examples, flops_per_example, self.flops[ids], self.speedup[ids])
        return down, compute, up

    def client_legs_s(
        self, cid: int, examples: int, flops_per_example: float, down_bytes: int, up_bytes: int
    ) -> tuple[float, float, float]:
        """:meth:`legs_s` of one client, in Python floats (the same operations in the
        same order, so the same bits, without six one-element arrays per client)."""
        latency = float(self.latency_s[cid])
        down = transfer_one_s(latency, down_bytes, self.downlink_bps[cid])
        speedup = self.speedup[cid]
        compute = compute_one_s(examples, flops_per_example, self.flops[cid], speedup)
        up = transfer_one_s(latency, up_bytes, self.uplink_bps[cid])
        return down, compute, up

    def available(self, rng: np.random.Generator) -> NDArray[np.int64]:
        """Ids of the clients that are online this round (Bernoulli(availability))."""
        online = rng.random(len(self)) < self.availability
        return np.flatnonzero(online).astype(np.int64)

    @classmethod
    def generate(cls, n: int, dist: ProfileDistribution, rng: np.random.Generator) -> ProfileTable:
        """Draw ``n`` profiles from ``dist``."""
        if n < 1:
            raise ConfigError(f"number of devices must be >= 1, got {n}")
        log_lo = np.log(dist.flops_max / dist.compute_spread)
        flops = np.exp(rng.uniform(log_lo, np.log(dist.flops_max), n))

        def lognormal(median: float) -> F64:
            return median * np.exp(dist.bandwidth_sigma * rng.standard_normal(n))

        return cls(
            flops=flops,
            memory_gb=np.full(n, dist.memory_gb),
            uplink_bps=lognormal(dist.uplink_mbps) * 1e6,
            downlink_bps=lognormal(dist.downlink_mbps) * 1e6,
            latency_s=lognormal(dist.latency_ms) / 1e3,
            availability=np.full(n, dist.availability),
            bf16_speedup=np.full(n, dist.bf16_speedup),
            fp16_speedup=np.full(n, dist.fp16_speedup),
        )

    @classmethod
    def load_csv(cls, path: Path, n: int) -> ProfileTable:
        """Read profiles for clients ``0..n-1`` from a CSV file (see module docstring);
        the speed-factor columns are optional (1.0 when absent).

        Raises:
            DataError: unreadable file, missing columns, missing devices or bad values.
        """
        try:
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise DataError(f"cannot read device profiles {path}: {exc.strerror}") from exc
        if not rows or set(COLUMNS) - set(rows[0]):
            raise DataError(f"device profiles {path}: need columns {', '.join(COLUMNS)}")
        try:
            table = {int(r["device_id"]): r for r in rows}
            wanted = COLUMNS[1:] + tuple(c for c in SPEEDUP_COLUMNS if c in rows[0])
            cols = {c: np.array([float(table[i][c]) for i in range(n)]) for c in wanted}
        except KeyError as exc:
            raise DataError(f"device profiles {path}: no row for device {exc}") from None
        except ValueError as exc:
            raise DataError(f"device profiles {path}: bad number: {exc}") from None
        return cls(
            cols["flops"],
            cols["memory_gb"],
            cols["uplink_mbps"] * 1e6,
            cols["downlink_mbps"] * 1e6,
            cols["latency_ms"] / 1e3,
            cols["availability"],
            cols.get("bf16_speedup", np.ones(n)),
            cols.get("fp16_speedup", np.ones(n)),
        )

    def save_csv(self, path: Path) -> None:
        """Write the table in the format :meth:`load_csv` reads."""
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS + SPEEDUP_COLUMNS)
            for i in range(len(self)):
                writer.writerow(
                    [
                        i,
                        self.flops[i],
                        self.memory_gb[i],
                        self.uplink_bps[i] / 1e6,
                        self.downlink_bps[i] / 1e6,
                        self.latency_s[i] * 1e3,
                        self.availability[i],
                        self.bf16_speedup[i],
                        self.fp16_speedup[i],
                    ]
                )
