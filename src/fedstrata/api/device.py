"""``fedstrata device bench``: measure this machine and record it in the registry.

The throughput (the registry's ``cpu_score``) is measured at float32; the device's
``bf16_speedup`` and ``fp16_speedup`` time :data:`SPEED_STEPS` local steps of the
configured model under bf16 / fp16 autocast against the same steps at fp32,
interleaved (:func:`~fedstrata.scheduling.relative_speed`). A precision this machine's
torch cannot train at keeps the factor 1.0 (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from fedstrata.api.components import local_plan, population, resolve_task, trainer_factory
from fedstrata.config import FedConfig
from fedstrata.core.context import RoundContext
from fedstrata.core.training import ClientPopulation, LocalPlan
from fedstrata.errors import ConfigError, FedstrataError
from fedstrata.scheduling import (
    DeviceMeasurement,
    Registry,
    measure_device,
    register_measurement,
    relative_speed,
)

__all__ = ["SPEED_STEPS", "bench_device", "parse_host_port"]

if TYPE_CHECKING:
    from fedstrata.torch_adapter import Task

log = logging.getLogger(__name__)

SPEED_STEPS = 8
"""Local steps per timed call when measuring a precision's speed factor."""


def parse_host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` as a tuple.

    Raises:
        ConfigError: not of the form host:port with a port in 1..65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def bench_device(
    config: FedConfig,
    *,
    center: str | None = None,
    registry_url: str | None = None,
    device_id: int = 0,
    repeats: int = 3,
) -> DeviceMeasurement:
    """Time real local training of the configured model on this machine.

    Trains on the first client's data with the configured local plan at fp32, times
    the bf16 and fp16 speed factors (see the module docstring), measures memory and
    (with ``center``) the TCP round-trip time, and with ``registry_url`` stores the
    result as ``device_id``'s profile.

    Raises:
        ConfigError: bad ``center`` or config.
        TaskError: the model fails to train at fp32.
        TransportError: the center does not answer.
        RegistryError: the registry cannot be written.
    """
    task = resolve_task(config)  # the config's task, or None: the built-in model
    dataset = population(config, task)
    train_once, flops = _train_fn(_at(config, "fp32"), dataset, task, local_plan(config.client))
    target = None if center is None else parse_host_port(center)
    measurement = measure_device(
        train_once, flops_per_example=flops, repeats=repeats, rtt_target=target
    )
    bf16, fp16 = _speedups(config, dataset, task, repeats)
    measurement = replace(measurement, bf16_speedup=bf16, fp16_speedup=fp16)
    if registry_url is not None:
        with Registry.open(registry_url) as registry:
            register_measurement(registry, device_id, measurement)
    return measurement


def _at(config: FedConfig, precision: str) -> FedConfig:
    client = config.client.model_copy(update={"precision": precision})
    return config.model_copy(update={"client": client})


def _train_fn(
    config: FedConfig, dataset: ClientPopulation, task: Task | None, plan: LocalPlan
) -> tuple[Callable[[], int], float]:
    """A call that trains client 0 with ``plan`` under ``config``'s precision, and the
    model's FLOPs per example."""
    trainer = trainer_factory(config, dataset, task)()
    data = dataset.client(0)
    params = trainer.initial_params(0)
    out = np.empty_like(params)

    def train_once() -> int:
        trainer.train(params, data, plan, RoundContext(0, config.seed).for_client(0), out)
        return plan.num_samples(len(data))

    return train_once, trainer.flops_per_example


def _speedups(
    config: FedConfig, dataset: ClientPopulation, task: Task | None, repeats: int
) -> tuple[float, float]:
    """(bf16, fp16) throughput relative to fp32 over :data:`SPEED_STEPS` local steps;
    1.0 where this machine's torch cannot train at that precision."""
    plan = replace(local_plan(config.client), epochs=None, steps=SPEED_STEPS)
    reference, _ = _train_fn(_at(config, "fp32"), dataset, task, plan)
    factors = []
    for precision in ("bf16", "fp16"):
        try:
            other, _ = _train_fn(_at(config, precision), dataset, task, plan)
            factors.append(relative_speed(reference, other, repeats=repeats))
        except FedstrataError as exc:  # fp32 trained with this config: it is the precision
            log.warning("%s speed factor not measured (kept 1.0): %s", precision, exc)
            factors.append(1.0)
    return factors[0], factors[1]
