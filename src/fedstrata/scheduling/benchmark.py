"""Measure a device: training throughput, memory, and round-trip time to the server.

:func:`measure_device` is the pure part of ``fedstrata device bench``: it calls a
training function a few times, reads memory from psutil and times TCP connects; the
clock and the connect are injectable so tests control time. :func:`register_measurement`
writes the result into the registry (``cpu_score``, ``memory_gb``, ``network_latency``).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import psutil

from fedstrata.errors import ConfigError, TransportError
from fedstrata.scheduling.records import GFLOP
from fedstrata.scheduling.registry import Registry

__all__ = ["DeviceMeasurement", "measure_device", "measure_rtt", "register_measurement"]

log = logging.getLogger(__name__)

TrainFn = Callable[[], int]
"""Runs one chunk of local training and returns how many examples it processed."""


@dataclass(frozen=True)
class DeviceMeasurement:
    """What one benchmark of a device found.

    Attributes:
        throughput_eps: training examples per second (median over repeats).
        flops_per_example: FLOPs of one example, as given to :func:`measure_device`.
        memory_total_gb: the machine's physical memory.
        memory_available_gb: memory available to a new process at measurement time.
        rtt_ms: median TCP-connect round-trip time to the server, or ``None``.
        repeats: timed calls of the training function.
    """

    throughput_eps: float
    flops_per_example: float
    memory_total_gb: float
    memory_available_gb: float
    rtt_ms: float | None
    repeats: int

    def __post_init__(self) -> None:
        if not self.throughput_eps > 0:
            raise ConfigError(f"throughput_eps must be > 0, got {self.throughput_eps}")
        if not self.flops_per_example > 0:
            raise ConfigError(f"flops_per_example must be > 0, got {self.flops_per_example}")
        if self.rtt_ms is not None and not self.rtt_ms >= 0:
            raise ConfigError(f"rtt_ms must be None or >= 0, got {self.rtt_ms}")

    @property
    def cpu_score(self) -> float:
        """Sustained training GFLOP/s, the registry's ``cpu_score``."""
        return self.throughput_eps * self.flops_per_example / GFLOP

    @property
    def latency_ms(self) -> float:
        """One-way latency estimate (half the RTT; 0 when not measured)."""
        return 0.0 if self.rtt_ms is None else self.rtt_ms / 2


def measure_rtt(
    host: str,
    port: int,
    *,
    attempts: int = 5,
    timeout_s: float = 2.0,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median time in ms to open (and close) a TCP connection to ``host:port``.

    Raises:
        ConfigError: ``attempts`` < 1 or ``timeout_s`` <= 0.
        TransportError: the host cannot be reached.
    """
    if attempts < 1:
        raise ConfigError(f"measure_rtt attempts must be >= 1, got {attempts}")
    if not timeout_s > 0:
        raise ConfigError(f"measure_rtt timeout_s must be > 0, got {timeout_s}")
    samples = []
    for _ in range(attempts):
        start = clock()
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as exc:
            raise TransportError(f"cannot reach {host}:{port} to time its RTT: {exc}") from exc
        samples.append((clock() - start) * 1e3)
    return float(np.median(samples))


def measure_device(
    train_fn: TrainFn,
    *,
    flops_per_example: float,
    repeats: int = 3,
    warmup: int = 1,
    rtt_target: tuple[str, int] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> DeviceMeasurement:
    """Benchmark this device with ``train_fn`` (see :data:`TrainFn`).

    ``warmup`` untimed calls come first (allocations, JIT); the throughput is the
    median of ``repeats`` timed calls.

    Raises:
        ConfigError: ``repeats`` < 1, ``warmup`` < 0, or ``train_fn`` reports no examples.
        TransportError: ``rtt_target`` is unreachable.
    """
    if repeats < 1 or warmup < 0:
        raise ConfigError(
            f"measure_device needs repeats >= 1 and warmup >= 0, got "
            f"repeats={repeats}, warmup={warmup}"
        )
    for _ in range(warmup):
        train_fn()
    rates = []
    for _ in range(repeats):
        start = clock()
        examples = train_fn()
        elapsed = clock() - start
        if examples < 1:
            raise ConfigError(
                f"train_fn must return the examples it processed (>= 1), got {examples}"
            )
        rates.append(examples / max(elapsed, 1e-9))
    mem = psutil.virtual_memory()
    rtt = None if rtt_target is None else measure_rtt(*rtt_target, clock=clock)
    return DeviceMeasurement(
        float(np.median(rates)),
        flops_per_example,
        mem.total / 2**30,
        mem.available / 2**30,
        rtt,
        repeats,
    )


def register_measurement(
    registry: Registry, device_id: int, measurement: DeviceMeasurement
) -> None:
    """Store ``measurement`` as ``device_id``'s cpu_score, memory and latency.

    A new device is inserted (its bandwidth and availability take the schema
    defaults); an existing one keeps its other columns and history.

    Raises:
        RegistryError: the write failed.
    """
    registry.update_measurement(
        device_id,
        cpu_score=measurement.cpu_score,
        memory_gb=measurement.memory_available_gb,
        network_latency_ms=measurement.latency_ms,
    )
    log.info(
        "device %d: %.3g GFLOP/s, %.1f GB available, latency %.2f ms",
        device_id,
        measurement.cpu_score,
        measurement.memory_available_gb,
        measurement.latency_ms,
    )
