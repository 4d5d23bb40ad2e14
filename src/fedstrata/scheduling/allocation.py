"""Workload allocation, over-selection and deadline settlement (pure functions).

A synchronous round waits for its slowest client. Instead of giving every client the
same work, :func:`allocate_work` sizes each client's work so that its predicted finish
time (downlink + compute + uplink) meets a common target no later than the deadline:
fast devices train on more examples, slow ones on fewer, and all finish together.
This is the deadline-aware workload sizing of FedProx's variable local work (Li et al.,
MLSys 2020) and of FedBalancer / REFL-style systems, with the over-commitment of Bonawitz
et al. (MLSys 2019): select ``k * (1 + r)`` clients and keep the first ``k`` to arrive.
At the deadline, :func:`settle_at_deadline` accepts partial work (weighted by the
fraction done) and drops true stragglers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.timing import transfer_s
from fedstrata.errors import ConfigError, DataError
from fedstrata.scheduling.predictor import TimePredictor
from fedstrata.scheduling.records import AllocationCandidates, DeviceProfiles

__all__ = [
    "Allocation",
    "WorkBounds",
    "allocate_work",
    "choose_partitions",
    "first_arrivals",
    "link_seconds",
    "overselect",
    "plan_round",
    "settle_at_deadline",
    "settle_reported",
    "settlement_weights",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]


@dataclass(frozen=True)
class WorkBounds:
    """Limits on one client's work (examples) in a round.

    Attributes:
        min_work: least useful work; a client that cannot do it in time is infeasible.
        max_work: most work (e.g. epochs x local data), ``None`` for no cap.
        granularity: work is a multiple of this (e.g. the batch size, for whole steps).
    """

    min_work: int = 1
    max_work: int | None = None
    granularity: int = 1

    def __post_init__(self) -> None:
        if self.granularity < 1:
            raise ConfigError(f"WorkBounds.granularity must be >= 1, got {self.granularity}")
        if self.min_work < 1:
            raise ConfigError(f"WorkBounds.min_work must be >= 1, got {self.min_work}")
        if self.max_work is not None and self.max_work < self.min_work:
            raise ConfigError(
                f"WorkBounds.max_work={self.max_work} must be >= min_work={self.min_work}"
            )


@dataclass(frozen=True, eq=False)
class Allocation:
    """Per-client work for one round and its predicted timing.

    Attributes:
        work: examples assigned (``min_work`` for infeasible clients).
        compute_s: predicted training seconds.
        finish_s: predicted finish time from the round start (fixed + compute).
        feasible: the client can do ``min_work`` by the deadline.
        target_s: the common finish time the allocation aimed at.
    """

    work: I64
    compute_s: F64
    finish_s: F64
    feasible: B
    target_s: float


def _per_client(name: str, value: F64 | float, n: int) -> F64:
    arr = np.asarray(value, dtype=np.float64)
    arr = np.full(n, float(arr)) if arr.ndim == 0 else arr
    if arr.shape != (n,):
        raise DataError(f"allocate_work: {name} has shape {arr.shape}, want ({n},)")
    return arr


def allocate_work(
    seconds_per_example: F64,
    fixed_s: F64 | float,
    deadline_s: float,
    bounds: WorkBounds | None = None,
    *,
    max_work: I64 | None = None,
    safety: float = 0.0,
) -> Allocation:
    """Size each client's work so predicted finish times are equal and <= the deadline.

    The target is ``min(deadline * (1 - safety), slowest finish at max work)``; each
    client gets the most work (a multiple of the granularity, within bounds) that
    finishes by the target. Clients not capped by ``max_work`` finish within one
    granule of the target.

    Args:
        seconds_per_example: predicted compute seconds per example, per client.
        fixed_s: seconds that do not scale with work (downlink + uplink + overhead).
        deadline_s: the round deadline, seconds from the round start.
        bounds: work limits (default :class:`WorkBounds`).
        max_work: per-client caps overriding ``bounds.max_work`` (e.g. local data size).
        safety: fraction of the deadline kept as a margin, in [0, 1).

    Raises:
        ConfigError: ``deadline_s`` <= 0 or ``safety`` outside [0, 1).
        DataError: arrays of different lengths or non-positive speeds.
    """
    b = bounds or WorkBounds()
    if not deadline_s > 0:
        raise ConfigError(f"allocate_work deadline_s must be > 0, got {deadline_s}")
    if not 0 <= safety < 1:
        raise ConfigError(f"allocate_work safety must be in [0, 1), got {safety}")
    spe = np.asarray(seconds_per_example, dtype=np.float64)
    n = spe.shape[0]
    if not (np.isfinite(spe) & (spe > 0)).all():
        raise DataError("allocate_work: seconds_per_example must be finite and > 0")
    fixed = _per_client("fixed_s", fixed_s, n)
    cap = _caps(b, max_work, n)
    budget = deadline_s * (1 - safety)
    feasible = fixed + b.min_work * spe <= budget
    target = budget
    if feasible.any():
        target = float(min(budget, np.max(fixed[feasible] + cap[feasible] * spe[feasible])))
    fit = np.floor((target - fixed) / spe / b.granularity) * b.granularity
    work = np.clip(np.nan_to_num(fit, posinf=0.0, neginf=0.0), b.min_work, cap).astype(np.int64)
    compute = work * spe
    return Allocation(work, compute, fixed + compute, feasible, target)


def _caps(b: WorkBounds, max_work: I64 | None, n: int) -> F64:
    cap = np.full(n, np.inf if b.max_work is None else float(b.max_work))
    if max_work is not None:
        per = _per_client("max_work", np.asarray(max_work, dtype=np.float64), n)
        if (per < b.min_work).any():
            raise DataError(f"allocate_work: max_work must be >= min_work={b.min_work}")
        cap = np.minimum(cap, per)
    return cap


def link_seconds(profiles: DeviceProfiles, down_bytes: int, up_bytes: int) -> tuple[F64, F64]:
    """Downlink and uplink seconds: one-way latency plus bytes over bandwidth
    (:func:`~fedstrata.core.timing.transfer_s`, the simulator's formula).

    Raises:
        ConfigError: negative byte counts.
    """
    if down_bytes < 0 or up_bytes < 0:
        raise ConfigError(f"link_seconds bytes must be >= 0, got {down_bytes}, {up_bytes}")
    latency = profiles.network_latency_ms / 1e3
    down = transfer_s(latency, down_bytes, profiles.downlink_mbps * 1e6)
    up = transfer_s(latency, up_bytes, profiles.uplink_mbps * 1e6)
    return down, up


def plan_round(
    predictor: TimePredictor,
    profiles: DeviceProfiles,
    *,
    deadline_s: float,
    down_bytes: int,
    up_bytes: int,
    bounds: WorkBounds | None = None,
    max_work: I64 | None = None,
    safety: float = 0.0,
) -> Allocation:
    """:func:`allocate_work` for ``profiles``' devices with the predictor's speeds.

    Raises:
        RegistryError: a device unknown to the predictor.
        ConfigError: see :func:`allocate_work`.
    """
    down, up = link_seconds(profiles, down_bytes, up_bytes)
    spe = predictor.seconds_per_example(profiles.device_id)
    fixed = down + up + predictor.config.overhead_s
    return allocate_work(spe, fixed, deadline_s, bounds, max_work=max_work, safety=safety)


def overselect(k: int, rate: float) -> int:
    """How many clients to invite so that ``k`` remain: ``ceil(k * (1 + rate))``.

    Raises:
        ConfigError: ``k`` < 1 or ``rate`` < 0.
    """
    if k < 1:
        raise ConfigError(f"overselect k must be >= 1, got {k}")
    if not rate >= 0:
        raise ConfigError(f"overselect rate must be >= 0, got {rate}")
    return math.ceil(k * (1 + rate) - 1e-9)


def first_arrivals(arrival_s: F64, k: int, deadline_s: float | None = None) -> B:
    """Mask of the first ``k`` arrivals (ties by position), none after the deadline.

    Raises:
        ConfigError: ``k`` < 0.
    """
    if k < 0:
        raise ConfigError(f"first_arrivals k must be >= 0, got {k}")
    t = np.asarray(arrival_s, dtype=np.float64)
    order = np.argsort(t, kind="stable")[:k]
    mask = np.zeros(t.shape[0], dtype=bool)
    mask[order] = True
    if deadline_s is not None:
        mask &= t <= deadline_s
    return mask & np.isfinite(t)


def settle_at_deadline(
    assigned: I64,
    progress_rate: F64,
    deadline: float,
    *,
    start_s: F64 | float = 0.0,
    upload_s: F64 | float = 0.0,
    min_fraction: float = 0.0,
    granularity: int = 1,
) -> tuple[I64, B]:
    """Work each client gets done by the deadline, and which clients are dropped.

    A client computes from ``start_s`` (after its download) at ``progress_rate``
    examples per second and must leave ``upload_s`` to send its update, so it completes
    ``min(assigned, floor(rate * (deadline - start_s - upload_s)))`` examples, rounded
    down to ``granularity``. A client is dropped (a true straggler) when it completes
    nothing or less than ``min_fraction`` of its assignment.

    Returns:
        ``(completed_work, dropped_mask)``; completed work is 0 where dropped.

    Raises:
        ConfigError: ``min_fraction`` outside [0, 1] or ``granularity`` < 1.
        DataError: arrays of different lengths, negative rates or assignments < 1.
    """
    if not 0 <= min_fraction <= 1:
        raise ConfigError(f"settle_at_deadline min_fraction must be in [0, 1], got {min_fraction}")
    if granularity < 1:
        raise ConfigError(f"settle_at_deadline granularity must be >= 1, got {granularity}")
    work = np.asarray(assigned, dtype=np.int64)
    n = work.shape[0]
    rate = _per_client("progress_rate", progress_rate, n)
    if (work < 1).any() or not (rate >= 0).all():
        raise DataError("settle_at_deadline: assigned must be >= 1 and progress_rate >= 0")
    window = deadline - _per_client("start_s", start_s, n) - _per_client("upload_s", upload_s, n)
    done = np.floor(np.maximum(window, 0.0) * rate / granularity) * granularity
    return settle_reported(work, np.minimum(done, work).astype(np.int64), min_fraction)


def settle_reported(assigned: I64, completed: I64, min_fraction: float) -> tuple[I64, B]:
    """The settlement rule on work already done (a real device's report, or the work a
    model of the device finished): a client is dropped (a true straggler) when it
    completed nothing or less than ``min_fraction`` of its assignment.

    Returns:
        ``(completed_work, dropped_mask)``; completed work is capped at the assignment
        and 0 where dropped.

    Raises:
        ConfigError: ``min_fraction`` outside [0, 1].
        DataError: arrays of different lengths, assignments < 1 or negative work.
    """
    if not 0 <= min_fraction <= 1:
        raise ConfigError(f"settle_reported min_fraction must be in [0, 1], got {min_fraction}")
    work = np.asarray(assigned, dtype=np.int64)
    done = np.asarray(completed, dtype=np.int64)
    if done.shape != work.shape or (work < 1).any() or (done < 0).any():
        raise DataError("settle_reported: assigned >= 1 and completed >= 0, of one length")
    done = np.minimum(done, work)
    dropped = (done == 0) | (done < min_fraction * work)
    out: I64 = np.where(dropped, 0, done)
    return out, dropped


def settlement_weights(assigned: I64, completed: I64, dropped: B) -> F64:
    """Each client's aggregation weight factor: work done / assigned, 0 when dropped."""
    frac = np.asarray(completed, dtype=np.float64) / np.asarray(assigned, dtype=np.float64)
    return np.where(dropped, 0.0, frac)


def choose_partitions(candidates: AllocationCandidates) -> tuple[I64, I64]:
    """For each device in the allocation query's result, the heaviest partition it fits.

    "Heaviest" is the lowest ``cpu_score / compute_intensity`` score among the device's
    candidates, i.e. the most compute-intensive partition its memory admits.

    Returns:
        ``(device_ids, partition_ids)`` sorted by device id.
    """
    order = np.lexsort((candidates.partition_id, candidates.score, candidates.device_id))
    dev = candidates.device_id[order]
    first = np.flatnonzero(np.r_[True, dev[1:] != dev[:-1]]) if dev.size else np.arange(0)
    return dev[first], candidates.partition_id[order][first]
