"""``fedstrata device bench``: measure this machine and record it in the registry."""

from __future__ import annotations

import numpy as np

from fedstrata.api.components import local_plan, population, resolve_task, trainer_factory
from fedstrata.config import FedConfig
from fedstrata.core.context import RoundContext
from fedstrata.errors import ConfigError
from fedstrata.scheduling import DeviceMeasurement, Registry, measure_device, register_measurement

__all__ = ["bench_device", "parse_host_port"]


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

    Trains on the first client's data with the configured local plan, measures memory
    and (with ``center``) the TCP round-trip time, and with ``registry_url`` stores the
    result as ``device_id``'s profile.

    Raises:
        ConfigError: bad ``center`` or config.
        TransportError: the center does not answer.
        RegistryError: the registry cannot be written.
    """
    task = resolve_task(config)  # the config's task, or None: the built-in model
    dataset = population(config, task)
    trainer = trainer_factory(config, dataset, task)()
    data, plan = dataset.client(0), local_plan(config.client)
    params = trainer.initial_params(0)
    out = np.empty_like(params)

    def train_once() -> int:
        trainer.train(params, data, plan, RoundContext(0, config.seed).for_client(0), out)
        return plan.num_samples(len(data))

    target = None if center is None else parse_host_port(center)
    measurement = measure_device(
        train_once, flops_per_example=trainer.flops_per_example, repeats=repeats,
        rtt_target=target,
    )  # fmt: skip
    if registry_url is not None:
        with Registry.open(registry_url) as registry:
            register_measurement(registry, device_id, measurement)
    return measurement
