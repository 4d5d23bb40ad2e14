"""The simulator's device profiles and the device registry are one source.

``registry_profiles`` turns a :class:`~fedstrata.sim.profiles.ProfileTable` into registry
rows, ``profile_table`` the reverse, ``with_registered`` puts registered rows into a
table (keeping its other rows), and ``start_from_registry`` begins a simulation from a
registry (profiles plus a predictor warmed by the recorded history).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import DataError
from fedstrata.scheduling import (
    DeviceProfiles,
    PredictorConfig,
    Registry,
    TimePredictor,
    replay_history,
)
from fedstrata.sim.profiles import ProfileTable

__all__ = ["profile_table", "registry_profiles", "start_from_registry", "with_registered"]


def registry_profiles(table: ProfileTable) -> DeviceProfiles:
    """The simulator's profiles as registry rows (device ``i`` is row ``i``)."""
    return DeviceProfiles(
        np.arange(len(table), dtype=np.int64),
        table.flops / 1e9,
        table.memory_gb,
        table.latency_s * 1e3,
        table.uplink_bps / 1e6,
        table.downlink_bps / 1e6,
        table.availability,
        table.bf16_speedup,
        table.fp16_speedup,
    )


def profile_table(devices: DeviceProfiles) -> ProfileTable:
    """Registry rows as the simulator's profiles; ids must be ``0 .. n-1``.

    Raises:
        DataError: the ids are not exactly ``0 .. n-1``.
    """
    order = np.argsort(devices.device_id, kind="stable")
    if not np.array_equal(devices.device_id[order], np.arange(len(devices))):
        raise DataError("profile_table: registry device ids must be exactly 0 .. n-1")
    cols = _columns(devices.take(order))
    return ProfileTable(
        cols["flops"], cols["memory_gb"], cols["uplink_bps"], cols["downlink_bps"],
        cols["latency_s"], cols["availability"], cols["bf16_speedup"], cols["fp16_speedup"],
    )  # fmt: skip


def with_registered(table: ProfileTable, known: DeviceProfiles) -> ProfileTable:
    """``table`` with the registered rows ``known`` in place of its own (id ``i`` is row
    ``i``); the other rows and the table's precision are kept exactly.

    Raises:
        DataError: an id of ``known`` is not a row of ``table``.
    """
    at = known.device_id
    if at.size and not (int(at.min()) >= 0 and int(at.max()) < len(table)):
        raise DataError(f"with_registered: ids must be table rows 0 .. {len(table) - 1}")
    out = {}
    for name, col in _columns(known).items():
        merged = getattr(table, name).copy()
        merged[at] = col
        out[name] = merged
    return replace(table, **out)


def _columns(d: DeviceProfiles) -> dict[str, NDArray[np.float64]]:
    """Registry rows as the simulator's columns (FLOP/s, bit/s, seconds)."""
    return {
        "flops": d.flops,
        "memory_gb": d.memory_gb,
        "uplink_bps": d.uplink_mbps * 1e6,
        "downlink_bps": d.downlink_mbps * 1e6,
        "latency_s": d.network_latency_ms / 1e3,
        "availability": d.availability,
        "bf16_speedup": d.bf16_speedup,
        "fp16_speedup": d.fp16_speedup,
    }


def start_from_registry(
    registry: Registry,
    flops_per_example: float,
    config: PredictorConfig | None = None,
    precision: str = "fp32",
) -> tuple[ProfileTable, DeviceProfiles, TimePredictor]:
    """Begin a simulation from a registry: profiles, and a predictor warmed by history,
    for a run that trains at ``precision`` (resolved).

    Raises:
        RegistryError: the registry cannot be read.
        DataError: registry ids are not ``0 .. n-1``.
    """
    devices = registry.devices()
    predictor = TimePredictor.from_profiles(devices, flops_per_example, config, precision)
    replay_history(predictor, registry.history())
    return profile_table(devices).at_precision(precision), devices, predictor
