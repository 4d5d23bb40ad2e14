"""Build the runtime's scheduling parts from a :class:`~fedstrata.config.FedConfig`.

:func:`center_scheduler` builds a center's
:class:`~fedstrata.runtime.scheduling.CenterScheduler` as the simulator builds its
planner and selector (the device registry, Oort or uniform selection, the planner's
settings); :func:`client_profile` measures a client's device at start-up as
``fedstrata device bench`` does (:func:`measured_report`) and reports it with the
configured link figures. Importing this module imports the registry's SQLAlchemy:
callers defer it to configurations that schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from fedstrata.builders import init_seed, local_plan
from fedstrata.config import FedConfig
from fedstrata.coordinator.round_logic import dense_bytes
from fedstrata.core.context import RoundContext
from fedstrata.core.training import LocalData, Trainer
from fedstrata.runtime.sched_reports import DeviceReport
from fedstrata.runtime.scheduling import CenterScheduler
from fedstrata.scheduling import (
    OortSelector,
    RandomSelector,
    Registry,
    Selector,
    measure_device,
)
from fedstrata.scheduling.planner import ScheduleSettings

__all__ = ["center_scheduler", "client_profile", "measured_report"]


def center_scheduler(
    config: FedConfig, flops_per_example: float, size: int, num_clients: int, *,
    tree: bool = False,
) -> CenterScheduler | None:  # fmt: skip
    """The center's scheduler for ``config`` (None: ``scheduling`` is off), built as the
    simulator builds its planner and selector (``fedstrata.api.scheduling``): the
    registry of ``scheduling.registry_url`` (None: an in-memory SQLite registry for
    this run), Oort or uniform selection, the admission skipping infeasible devices
    (``tree``: over an explicit tree the selector skips them, as the simulator's tree
    does: :mod:`~fedstrata.runtime.tier_sched`).

    Raises:
        RegistryError: the registry cannot be opened or migrated.
    """
    s = config.scheduling
    if not s.enabled:
        return None
    registry = Registry.open(s.registry_url or "sqlite://")
    inner: Selector = OortSelector(num_clients) if s.selector == "oort" else (
        RandomSelector()
    )  # fmt: skip
    skip = s.allocation and s.skip_infeasible
    settings = ScheduleSettings(
        config.rounds.deadline_s, s.allocation, s.min_steps, s.max_steps, s.safety,
        min_fraction=s.min_fraction, skip_infeasible=skip and not tree,
        batch_size=config.client.batch_size, stop_at_deadline=s.stragglers == "partial",
    )  # fmt: skip
    nbytes = dense_bytes(size)
    return CenterScheduler(
        settings, inner, flops_per_example=flops_per_example, down_bytes=nbytes,
        up_bytes=nbytes, registry=registry, overselect=s.overselect, skip_infeasible=skip and tree,
        precision=config.client.precision, weighted=not config.privacy.enabled,
    )  # fmt: skip


def client_profile(
    config: FedConfig, trainer: Trainer, data: LocalData, client_id: int
) -> DeviceReport | None:
    """A client's device report under ``scheduling``, or FedBuff with a device registry
    (None: neither): this device measured
    as ``fedstrata device bench`` does (a one-step local training, timed), with the
    configured link figures (``devices.uplink_mbps``, ``downlink_mbps``,
    ``latency_ms``)."""
    s = config.scheduling
    if not (s.enabled or (s.async_.enabled and s.registry_url is not None)):
        return None  # FedBuff writes the profiles to its registry (fedbuff_registry.py)
    plan = replace(local_plan(config.client), epochs=None, steps=1)
    params = trainer.initial_params(init_seed(config))
    out = np.empty_like(params)
    ctx = RoundContext(0, config.seed).for_client(client_id)

    def train_once() -> int:
        trainer.train(params, data, plan, ctx, out)
        return plan.num_samples(len(data))

    d = config.devices
    return measured_report(
        train_once, flops_per_example=trainer.flops_per_example, uplink_mbps=d.uplink_mbps,
        downlink_mbps=d.downlink_mbps, latency_ms=d.latency_ms, local_examples=len(data),
    )  # fmt: skip


def measured_report(
    train_once: Callable[[], int],
    *,
    flops_per_example: float,
    uplink_mbps: float,
    downlink_mbps: float,
    latency_ms: float,
    local_examples: int,
    repeats: int = 3,
) -> DeviceReport:
    """Benchmark this device as ``fedstrata device bench`` does
    (:func:`~fedstrata.scheduling.measure_device` on one short local training) and
    report it with the configured link figures."""
    m = measure_device(train_once, flops_per_example=flops_per_example, repeats=repeats)
    return DeviceReport.of(
        m, uplink_mbps=uplink_mbps, downlink_mbps=downlink_mbps, latency_ms=latency_ms,
        local_examples=local_examples,
    )  # fmt: skip
