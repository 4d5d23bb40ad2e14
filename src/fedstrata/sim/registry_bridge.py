"""The simulator's device profiles and the device registry are one source.

``registry_profiles`` turns a :class:`~fedstrata.sim.profiles.ProfileTable` into registry
rows, ``profile_table`` the reverse, and ``start_from_registry`` begins a simulation from
a registry (profiles plus a predictor warmed by the recorded history).
"""

from __future__ import annotations

import numpy as np

from fedstrata.errors import DataError
from fedstrata.scheduling import (
    DeviceProfiles,
    PredictorConfig,
    Registry,
    TimePredictor,
    replay_history,
)
from fedstrata.sim.profiles import ProfileTable

__all__ = ["profile_table", "registry_profiles", "start_from_registry"]


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
    )


def profile_table(devices: DeviceProfiles) -> ProfileTable:
    """Registry rows as the simulator's profiles; ids must be ``0 .. n-1``.

    Raises:
        DataError: the ids are not exactly ``0 .. n-1``.
    """
    order = np.argsort(devices.device_id, kind="stable")
    if not np.array_equal(devices.device_id[order], np.arange(len(devices))):
        raise DataError("profile_table: registry device ids must be exactly 0 .. n-1")
    d = devices.take(order)
    return ProfileTable(
        d.flops,
        d.memory_gb,
        d.uplink_mbps * 1e6,
        d.downlink_mbps * 1e6,
        d.network_latency_ms / 1e3,
        d.availability,
    )


def start_from_registry(
    registry: Registry,
    flops_per_example: float,
    config: PredictorConfig | None = None,
) -> tuple[ProfileTable, DeviceProfiles, TimePredictor]:
    """Begin a simulation from a registry: profiles, and a predictor warmed by history.

    Raises:
        RegistryError: the registry cannot be read.
        DataError: registry ids are not ``0 .. n-1``.
    """
    devices = registry.devices()
    predictor = TimePredictor.from_profiles(devices, flops_per_example, config)
    replay_history(predictor, registry.history())
    return profile_table(devices), devices, predictor
