"""Measure a device: training throughput, memory, and round-trip time to the server.

:func:`measure_device` is the pure part of ``fedstrata device bench``: it calls a
training function a few times, reads memory from psutil and times TCP connects; the
clock and the connect are injectable so tests control time. :func:`relative_speed`
times the same training at another precision against float32 (the device's
``bf16_speedup`` / ``fp16_speedup``). :func:`register_measurement` writes the result
into the registry (``cpu_score``, ``memory_gb``, ``network_latency``, the factors).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import psutil

from fedstrata.errors import ConfigError, TransportError
from fedstrata.scheduling.records import GFLOP

if TYPE_CHECKING:  # SQLAlchemy: only where a measurement is registered
    from fedstrata.scheduling.registry import Registry

__all__ = [
    "DeviceMeasurement",
    "measure_device",
    "measure_rtt",
    "register_measurement",
    "relative_speed",
]

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
        bf16_speedup: throughput at bf16 autocast relative to fp32 (1.0: not measured).
        fp16_speedup: the same at fp16.
    """

    throughput_eps: float
    flops_per_example: float
    memory_total_gb: float
    memory_available_gb: float
    rtt_ms: float | None
    repeats: int
    bf16_speedup: float = 1.0
    fp16_speedup: float = 1.0

    def __post_init__(self) -> None:
        if not (self.bf16_speedup > 0 and self.fp16_speedup > 0):
            raise ConfigError(
                f"speed factors must be > 0, got bf16 {self.bf16_speedup}, "
                f"fp16 {self.fp16_speedup}"
            )
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
    _check_repeats("measure_device", repeats, warmup)
    for _ in range(warmup):
        train_fn()
    rates = [_rate(train_fn, clock) for _ in range(repeats)]
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


def _check_repeats(who: str, repeats: int, warmup: int) -> None:
    if repeats < 1 or warmup < 0:
        raise ConfigError(
            f"{who} needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}"
        )


def _rate(train_fn: TrainFn, clock: Callable[[], float]) -> float:
    """Examples per second of one timed call.

    Raises:
        ConfigError: ``train_fn`` reports no examples.
    """
    start = clock()
    examples = train_fn()
    elapsed = clock() - start
    if examples < 1:
        raise ConfigError(f"train_fn must return the examples it processed (>= 1), got {examples}")
    return examples / max(elapsed, 1e-9)


def relative_speed(
    reference: TrainFn,
    other: TrainFn,
    *,
    repeats: int = 3,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Throughput of ``other`` over that of ``reference`` (> 1: ``other`` is faster).

    After ``warmup`` untimed calls of each, ``repeats`` timed calls alternate between
    the two (so a change of the machine's load hits both alike); the ratio is of the
    medians.

    Raises:
        ConfigError: ``repeats`` < 1, ``warmup`` < 0, or a function reports no examples.
    """
    _check_repeats("relative_speed", repeats, warmup)
    for _ in range(warmup):
        reference(), other()
    pairs = [(_rate(reference, clock), _rate(other, clock)) for _ in range(repeats)]
    ref, oth = np.median(np.array(pairs), axis=0)
    return float(oth / ref)


def register_measurement(
    registry: Registry, device_id: int, measurement: DeviceMeasurement
) -> None:
    """Store ``measurement`` as ``device_id``'s cpu_score, memory, latency and speed
    factors.

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
        bf16_speedup=measurement.bf16_speedup,
        fp16_speedup=measurement.fp16_speedup,
    )
    log.info(
        "device %d: %.3g GFLOP/s (fp32; x%.2f at bf16, x%.2f at fp16), %.1f GB available, "
        "latency %.2f ms",
        device_id,
        measurement.cpu_score,
        measurement.bf16_speedup,
        measurement.fp16_speedup,
        measurement.memory_available_gb,
        measurement.latency_ms,
    )
