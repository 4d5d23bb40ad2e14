"""Device and network timing: how work and bytes become simulated seconds.

Every driver that charges simulated time and every planner that predicts it uses these
functions, so a prediction and a simulation differ only in what they assume, never in
the arithmetic:

* :func:`transfer_s`: one leg on a link, ``latency + bytes * 8 / bandwidth``
  (a client's downlink and uplink: ``ProfileTable.legs_s`` in the simulators,
  ``fedstrata plan``, the secure-aggregation charge; the allocation planner's
  ``link_seconds`` from registry profiles; the topology planner's broadcast);
* :func:`compute_s`: local training, ``examples * flops_per_example / (flops *
  speedup)``, ``flops`` the device's float32 training FLOP/s and ``speedup`` its
  factor at the run's precision (:data:`PRECISIONS`; 1 under ``fp32``) (the
  simulators' compute leg; the scheduler's cold-start seconds per example);
* :func:`fair_share_finish` (with :func:`water_fill`): transfers into one receiver
  sharing its ingress max-min fairly, event by event (the tree simulator);
* :func:`equal_share_bps` and :func:`makespan_bound`: the closed forms of the same
  sharing that the topology planner (``fedstrata plan`` for a tree) predicts with;
  they equal :func:`fair_share_finish` when no sender's own cap binds (see
  :func:`makespan_bound`).

Units are in the names: seconds ``_s``, bits per second ``_bps``, FLOP/s ``flops``.
Arguments broadcast like NumPy arrays; nothing here validates profiles (their tables
do at construction).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedstrata.errors import ConfigError

__all__ = [
    "PRECISIONS",
    "compute_one_s",
    "compute_s",
    "equal_share_bps",
    "fair_share_finish",
    "makespan_bound",
    "precision_speedup",
    "transfer_one_s",
    "transfer_s",
    "water_fill",
]

F64 = NDArray[np.float64]
_N = TypeVar("_N", float, NDArray[np.float64])

PRECISIONS = ("fp32", "bf16", "fp16")
"""The resolved ``client.precision`` values a device profile has a speed factor for:
``fp32`` is the reference (factor 1), ``bf16`` and ``fp16`` are autocast training's
throughput relative to ``fp32`` on that device (> 1 faster, < 1 slower)."""


def _transfer(latency_s: _N, nbytes: _N, bandwidth_bps: _N) -> _N:
    return latency_s + nbytes * 8 / bandwidth_bps


def _compute(examples: _N, flops_per_example: float, flops: _N, speedup: _N) -> _N:
    return examples * flops_per_example / (flops * speedup)


def transfer_s(latency_s: ArrayLike, nbytes: ArrayLike, bandwidth_bps: ArrayLike) -> F64:
    """Seconds until ``nbytes`` sent at ``bandwidth_bps`` have arrived:
    ``latency_s + nbytes * 8 / bandwidth_bps``."""
    f64 = np.float64
    out: F64 = _transfer(
        np.asarray(latency_s, dtype=f64), np.asarray(nbytes, dtype=f64), np.asarray(bandwidth_bps)
    )
    return out


def transfer_one_s(latency_s: float, nbytes: float, bandwidth_bps: float) -> float:
    """:func:`transfer_s` of one transfer in Python floats (same operations, same bits;
    the simulator's per-client hot path)."""
    return _transfer(float(latency_s), float(nbytes), float(bandwidth_bps))


def compute_s(
    examples: ArrayLike, flops_per_example: float, flops: ArrayLike, speedup: ArrayLike = 1.0
) -> F64:
    """Seconds to train on ``examples`` at ``flops`` float32 FLOP/s, ``speedup`` times
    faster at the run's precision: ``examples * flops_per_example / (flops * speedup)``."""
    f64 = np.float64
    out: F64 = _compute(
        np.asarray(examples, dtype=f64), flops_per_example, np.asarray(flops), np.asarray(speedup)
    )
    return out


def compute_one_s(
    examples: float, flops_per_example: float, flops: float, speedup: float
) -> float:
    """:func:`compute_s` of one client in Python floats (same operations, same bits)."""
    return _compute(float(examples), flops_per_example, float(flops), float(speedup))


def precision_speedup(precision: str, bf16: F64, fp16: F64) -> F64:
    """The speed factors at ``precision``: ones for ``fp32``, else ``bf16`` or ``fp16``.

    Raises:
        ConfigError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision == "fp32":
        return np.ones_like(bf16)
    if precision == "bf16":
        return bf16
    if precision == "fp16":
        return fp16
    known = ", ".join(PRECISIONS)
    raise ConfigError(f"precision must be one of {known} (resolved), got {precision!r}")


def equal_share_bps(capacity_bps: float, senders: int) -> float:
    """Each sender's share of a link that ``senders`` use at once (all of it for one)."""
    return capacity_bps / max(senders, 1)


def water_fill(caps_bps: F64, capacity_bps: float) -> F64:
    """Max-min fair rates of flows with per-flow caps sharing ``capacity_bps``."""
    m = caps_bps.size
    order = np.argsort(caps_bps, kind="stable")
    c = caps_bps[order]
    before = np.concatenate([[0.0], np.cumsum(c)[:-1]])
    level = (capacity_bps - before) / (m - np.arange(m))
    over = c > level
    rates = c.copy()
    if over.any():
        k = int(np.argmax(over))
        rates[k:] = level[k]
    out = np.empty(m)
    out[order] = rates
    return out


def fair_share_finish(start_s: F64, size_bits: F64, caps_bps: F64, capacity_bps: float) -> F64:
    """When each transfer into one receiver completes under max-min fair sharing.

    Processor sharing with per-sender caps, the rates recomputed by water filling at
    every start and finish event (Bertsekas & Gallager, *Data Networks*, 2nd ed.,
    1992, section 6.5.2).

    Args:
        start_s: when each sender is ready to send.
        size_bits: what each sends.
        caps_bps: each sender's own link rate.
        capacity_bps: the receiver's ingress, shared by the active senders.

    Raises:
        ConfigError: arrays of different shapes or non-positive rates.
    """
    if not (start_s.shape == size_bits.shape == caps_bps.shape) or start_s.ndim != 1:
        raise ConfigError("fair_share_finish: start_s, size_bits and caps_bps must be 1-D alike")
    if (caps_bps <= 0).any() or not capacity_bps > 0:
        raise ConfigError("fair_share_finish: caps_bps and capacity_bps must be > 0")
    finish = np.where(size_bits <= 0, start_s, np.inf)
    remaining = size_bits.astype(np.float64).copy()
    done = size_bits <= 0
    t = float(start_s.min(initial=0.0))
    while not done.all():
        active = np.flatnonzero(~done & (start_s <= t))
        pending = start_s[~done & (start_s > t)]
        next_start = float(pending.min()) if pending.size else math.inf
        if active.size == 0:
            t = next_start
            continue
        rates = water_fill(caps_bps[active], capacity_bps)
        to_finish = remaining[active] / rates
        dt = min(float(to_finish.min()), next_start - t)
        remaining[active] -= rates * dt
        t += dt
        ended = active[to_finish <= dt * (1 + 1e-12)]
        remaining[ended], done[ended], finish[ended] = 0.0, True, t
    return finish


def makespan_bound(ready_s: F64, bits: F64, caps_bps: F64, capacity_bps: float) -> float:
    """Closed-form finish of transfers sharing one ingress: per-flow and aggregate bounds.

    ``max(max_i(ready_i + bits_i/cap_i), max_k(ready_k + bits of flows ready at or
    after ready_k / capacity))``: the last finish of :func:`fair_share_finish` when the
    senders' caps do not bind (the link then works at full capacity whenever a
    transfer is pending), a lower bound of it otherwise.
    """
    if ready_s.size == 0:
        return 0.0
    order = np.argsort(ready_s, kind="stable")
    tail = np.cumsum(bits[order][::-1])[::-1]
    aggregate = float((ready_s[order] + tail / capacity_bps).max())
    return max(float((ready_s + bits / caps_bps).max()), aggregate)
