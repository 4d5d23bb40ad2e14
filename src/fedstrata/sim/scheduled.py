"""Heterogeneity-aware rounds in the simulator: predictor + allocation + deadline.

:class:`ScheduledPlanner` is the simulator's :class:`~fedstrata.sim.hooks.ClientPlanner`
for :mod:`fedstrata.scheduling`: the scheduler's :class:`~fedstrata.scheduling.planner.WorkPlanner`
(shared with the gRPC runtime) plus the simulator's model of its devices stopping at the
deadline (:class:`TrueDeviceCut`). Each round it

1. predicts every cohort member's seconds per local step (:class:`TimePredictor`,
   cold-started from the registry's profiles) and sizes its work with
   :func:`~fedstrata.scheduling.allocate_work` so that the predicted finish time
   (downlink + compute + uplink) meets the round deadline — slow devices get fewer
   steps, fast ones more (deadline-aware variable local work: FedProx, Li et al.,
   MLSys 2020; over-commitment: Bonawitz et al., MLSys 2019);
2. lets the simulated devices stop at the deadline: a device slower than predicted
   sends the whole steps it finished in time (partial work, weighted by the fraction
   done through :class:`SettlementWeighted`) and one that cannot finish a single step
   is a true straggler, rejected as late by the coordinator. This step models the
   device, so it reads the simulator's *true* profiles; the allocation never does;
3. learns from the round's reports: predictor update, registry write-back (one
   ``round_history`` row per cohort member per round), selector feedback (Oort), and
   ``RoundMetrics.schedule`` (a ``ScheduleStats``): utilization, idle time,
   throughput, predictor error.

:class:`ScheduledSelector` (:mod:`fedstrata.sim.scheduled_selector`) adapts a
:class:`fedstrata.scheduling.Selector` (uniform or Oort, Lai et al., OSDI 2021) to the
coordinator: it skips devices predicted unable to meet the deadline, over-selects, and
gives Oort the predictor's durations as hints.

The registry and the simulator's profiles are one source: :func:`registry_profiles`
and :func:`profile_table` convert between them, and :func:`start_from_registry` begins
a simulation from a registry, warming the predictor from its history.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import DataError
from fedstrata.scheduling import DeviceProfiles, Registry, Selector, TimePredictor
from fedstrata.scheduling.allocation import settle_reported
from fedstrata.scheduling.planner import ScheduleSettings, WorkPlanner
from fedstrata.sim.profiles import ProfileTable
from fedstrata.sim.registry_bridge import (
    profile_table,
    registry_profiles,
    start_from_registry,
    with_registered,
)
from fedstrata.sim.scheduled_selector import ScheduledSelector
from fedstrata.sim.settlement import SettlementWeighted

__all__ = [
    "ScheduleSettings",
    "ScheduledPlanner",
    "ScheduledSelector",
    "SettlementWeighted",
    "TrueDeviceCut",
    "profile_table",
    "registry_profiles",
    "start_from_registry",
    "with_registered",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
_EDGE = 1 - 1e-9  # stop a hair before the deadline so float sums never cross it


class TrueDeviceCut:
    """The simulated devices stopping at the deadline: the whole steps each finishes in
    time by its *true* profile (the allocation never reads it)."""

    def __init__(
        self,
        settings: ScheduleSettings,
        devices: ProfileTable,
        flops_per_example: float,
        down_bytes: int,
        up_bytes: int,
    ) -> None:
        self.settings, self.devices = settings, devices
        self.flops_per_example, self._bytes = flops_per_example, (down_bytes, up_bytes)

    def legs(self, ids: I64) -> tuple[F64, F64, F64]:
        """(downlink, seconds per example, uplink) from the true profiles."""
        down_b, up_b = self._bytes
        ones = np.ones(ids.size, dtype=np.int64)
        return self.devices.legs_s(ids, ones, self.flops_per_example, down_b, up_b)

    def __call__(self, ids: I64, assigned: I64, per: I64) -> I64:
        s = self.settings
        assert s.deadline_s is not None  # the planner cuts only under a deadline
        down, spe, up = self.legs(ids)
        window = s.deadline_s * _EDGE - down - up
        done = np.floor(np.maximum(window, 0.0) / (spe * per)).astype(np.int64)
        done = np.minimum(done, assigned)
        _, straggler = settle_reported(assigned, done, s.min_fraction)
        out: I64 = np.where(straggler, assigned, done)  # it runs on and arrives late
        return out


class ScheduledPlanner(WorkPlanner):
    """The scheduler's planner over simulated devices (see the module docstring).

    Args:
        settings: deadline and allocation knobs.
        predictor: the scheduler's time predictor (knows only registry profiles).
        profiles: the registry's profiles, in any order, covering every client.
        devices: the simulator's true profiles (only for stopping at the deadline).
        client_sizes: local examples of every client.
        flops_per_example: of the trained model.
        down_bytes, up_bytes: bytes per download and per upload.
        registry: where each round's history is written (``None``: nowhere).
        selector: scheduling selector fed each round's outcome (e.g. Oort).
    """

    def __init__(
        self,
        settings: ScheduleSettings,
        predictor: TimePredictor,
        profiles: DeviceProfiles,
        devices: ProfileTable,
        client_sizes: NDArray[np.integer[Any]],
        *,
        flops_per_example: float,
        down_bytes: int,
        up_bytes: int,
        registry: Registry | None = None,
        selector: Selector | None = None,
    ) -> None:
        if len(client_sizes) != len(devices):
            raise DataError(f"{len(client_sizes)} client sizes for {len(devices)} device profiles")
        self.devices = devices
        self.true_cut = TrueDeviceCut(settings, devices, flops_per_example, down_bytes, up_bytes)
        super().__init__(
            settings, predictor, profiles, client_sizes,
            flops_per_example=flops_per_example, down_bytes=down_bytes, up_bytes=up_bytes,
            registry=registry, selector=selector, cut=self.true_cut,
        )  # fmt: skip

    def _true_legs(self, ids: I64) -> tuple[F64, F64, F64]:
        """(downlink, seconds per example, uplink) from the simulator's true profiles."""
        return self.true_cut.legs(ids)
