"""Heterogeneity-aware rounds: predictor + allocation + deadline, for every driver.

:class:`WorkPlanner` is the scheduler's planner; the simulator
(:class:`fedstrata.sim.scheduled.ScheduledPlanner`, which adds its model of the devices
stopping at the deadline) and the gRPC runtime (:mod:`fedstrata.runtime.scheduling`,
whose devices stop for real and report what they did) drive this one implementation.
Each round it

1. predicts every cohort member's seconds per local step (:class:`TimePredictor`,
   cold-started from the registry's profiles) and sizes its work with
   :func:`~fedstrata.scheduling.allocate_work` so that the predicted finish time
   (downlink + compute + uplink) meets the round deadline — slow devices get fewer
   steps, fast ones more (deadline-aware variable local work: FedProx, Li et al.,
   MLSys 2020; over-commitment: Bonawitz et al., MLSys 2019);
2. asks its :class:`DeadlineCut` (when given) which steps each device finishes by the
   deadline: partial work is weighted by the fraction done
   (:meth:`WorkPlanner.weight_factor`) and a device that cannot finish a single step is
   a true straggler, rejected as late by the coordinator;
3. learns from the round's :class:`ClientReport`\\ s: predictor update, registry
   write-back (one ``round_history`` row per cohort member per round), selector
   feedback (Oort), and ``RoundMetrics.schedule`` (a ``ScheduleStats``): utilization,
   idle time, throughput, predictor error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.metrics import ScheduleStats
from fedstrata.core.training import LocalPlan
from fedstrata.errors import ConfigError, DataError
from fedstrata.scheduling.allocation import (
    WorkBounds,
    allocate_work,
    link_seconds,
    settle_reported,
    settlement_weights,
)
from fedstrata.scheduling.metrics import round_utilization
from fedstrata.scheduling.predictor import TimePredictor
from fedstrata.scheduling.records import DeviceProfiles, HistoryBatch, WorkStatus
from fedstrata.scheduling.selection import Selector

if TYPE_CHECKING:
    from fedstrata.scheduling.registry import Registry

__all__ = ["ClientReport", "DeadlineCut", "ScheduleSettings", "WorkPlanner"]

log = logging.getLogger(__name__)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class ClientReport:
    """What happened to one cohort member in a round, in seconds (simulated or real).

    ``status`` is ``accepted``, ``late`` (missed the deadline) or ``failed``.
    """

    client_id: int
    examples: int
    down_s: float
    compute_s: float
    up_s: float
    arrival_s: float
    status: Literal["accepted", "late", "failed"]
    train_loss: float | None = None


class DeadlineCut(Protocol):
    """The local steps each device runs by the deadline (the simulator's device model)."""

    def __call__(self, ids: I64, assigned: I64, per: I64) -> I64:
        """Steps done of ``assigned`` (``per`` examples each); a straggler keeps its
        assignment (it runs on and arrives late)."""
        ...


@dataclass(frozen=True)
class ScheduleSettings:
    """How the planner sizes work (use the same ``deadline_s`` as ``RoundPolicy``).

    Attributes:
        deadline_s: seconds from the round start; ``None`` waits for everyone.
        allocation: size each client's steps to the deadline (needs ``deadline_s``);
            off, every client runs the default plan (the equal-work baseline).
        min_steps: least useful work; a device predicted unable to do it is infeasible.
        max_steps: most local steps a client may be given (``None``: no cap).
        safety: fraction of the deadline kept as a margin, in [0, 1).
        stop_at_deadline: devices send the whole steps done by the deadline.
        min_fraction: partial work below this fraction of the assignment is dropped.
        skip_infeasible: :meth:`ScheduledPlanner.admit` leaves out of the available
            clients those predicted unable to do ``min_steps`` by the deadline, before
            the coordinator draws the cohort (central DP's Poisson sample, which no
            selector picks); ``batch_size`` is their work per step.
    """

    deadline_s: float | None = None
    allocation: bool = True
    min_steps: int = 1
    max_steps: int | None = None
    safety: float = 0.0
    stop_at_deadline: bool = True
    min_fraction: float = 0.0
    skip_infeasible: bool = False
    batch_size: int = 1

    def __post_init__(self) -> None:
        d = self.deadline_s
        checks = [
            ("deadline_s", d is None or d > 0, "None or > 0"),
            ("allocation", not self.allocation or d is not None, "False without deadline_s"),
            ("min_steps", self.min_steps >= 1, ">= 1"),
            ("max_steps", self.max_steps is None or self.max_steps >= self.min_steps, ">= min"),
            ("safety", 0 <= self.safety < 1, "in [0, 1)"),
            ("min_fraction", 0 <= self.min_fraction <= 1, "in [0, 1]"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(
                    f"ScheduleSettings.{name}={getattr(self, name)!r}: must be {rule}"
                )


@dataclass(frozen=True, eq=False)
class _RoundPlan:
    """What the planner decided for the round in flight."""

    cohort: I64
    per_step: I64  # examples per local step of each client
    assigned: I64  # steps assigned
    planned: I64  # steps the device will run (cut at the deadline)
    predicted_s: F64  # predicted compute seconds of the assignment
    target_s: float


class WorkPlanner:
    """Sizes work per client, learns from each round, writes history back.

    Args:
        settings: deadline and allocation knobs.
        predictor: the scheduler's time predictor (knows only registry profiles).
        profiles: the registry's profiles, in any order, covering every client.
        client_sizes: local examples of every client (indexed by client id).
        flops_per_example: of the trained model.
        down_bytes, up_bytes: bytes per download and per upload.
        registry: where each round's history is written (``None``: nowhere).
        selector: scheduling selector fed each round's outcome (e.g. Oort).
        cut: the steps each device runs by the deadline (the simulator models its
            devices; None: the assignment, a real device stops itself).
    """

    def __init__(
        self,
        settings: ScheduleSettings,
        predictor: TimePredictor,
        profiles: DeviceProfiles,
        client_sizes: NDArray[np.integer[Any]],
        *,
        flops_per_example: float,
        down_bytes: int,
        up_bytes: int,
        registry: Registry | None = None,
        selector: Selector | None = None,
        cut: DeadlineCut | None = None,
    ) -> None:
        self.settings, self.predictor, self.cut = settings, predictor, cut
        self.sizes = np.asarray(client_sizes, dtype=np.int64)
        self.flops_per_example = flops_per_example
        self.registry, self.selector = registry, selector
        order = np.argsort(profiles.device_id, kind="stable")
        self._profiles, self._ids = profiles.take(order), profiles.device_id[order]
        down, up = link_seconds(self._profiles, down_bytes, up_bytes)
        self._link_s = down + up
        self._bytes = (down_bytes, up_bytes)
        self._round: _RoundPlan | None = None
        self._factor: dict[int, float] = {}
        self._skipped: tuple[int, int] | None = None  # (round, devices left out)

    def _rows(self, ids: I64) -> NDArray[np.intp]:
        pos = np.searchsorted(self._ids, ids).clip(0, max(self._ids.size - 1, 0))
        if self._ids.size == 0 or not (self._ids[pos] == ids).all():
            raise DataError("ScheduledPlanner: clients without a registry profile")
        return pos

    def per_step(self, ids: I64, batch_size: int) -> I64:
        """Examples per local step: the batch, or the whole local set when smaller."""
        out: I64 = np.minimum(batch_size, np.maximum(self.sizes[ids], 1))
        return out

    def predicted_finish(self, ids: I64, steps: I64 | int, batch_size: int) -> F64:
        """Predicted seconds from the round start until each client's update arrives."""
        spe = self.predictor.seconds_per_example(ids)
        work = np.asarray(steps) * self.per_step(ids, batch_size)
        return self._link_s[self._rows(ids)] + self.predictor.config.overhead_s + work * spe

    def feasible(self, ids: I64, batch_size: int) -> NDArray[np.bool_]:
        """Clients predicted able to do ``min_steps`` by the deadline (all if none)."""
        d = self.settings.deadline_s
        if d is None:
            return np.ones(ids.shape, dtype=bool)
        finish = self.predicted_finish(ids, self.settings.min_steps, batch_size)
        ok: NDArray[np.bool_] = finish <= d * (1 - self.settings.safety)
        return ok

    def drop_infeasible(self, round_idx: int, ids: I64, batch_size: int) -> I64:
        """``ids`` less the devices predicted unable to do ``min_steps`` by the deadline
        (:meth:`feasible`); how many were left out goes into the round's
        ``ScheduleStats.skipped_infeasible``. The one rule for the selector and
        :meth:`admit`."""
        ok = self.feasible(ids, batch_size)
        skipped = int(ids.size - ok.sum())
        self._skipped = (round_idx, skipped)
        if skipped:
            log.info("round %d: %d devices cannot meet the deadline", round_idx, skipped)
        out: I64 = ids[ok]
        return out

    def admit(self, round_idx: int, available: I64) -> I64:
        """Who may be drawn this round: ``available`` less the devices predicted
        infeasible when ``settings.skip_infeasible`` (see :class:`ScheduleSettings`).

        The prediction reads each device's profile, its own measured speed and its
        local set's size, never another client's data, so under central DP a device
        left out is sampled with probability 0 <= q and the accountant's q stays an
        upper bound on every client's inclusion probability.
        """
        ids = np.sort(np.asarray(available, dtype=np.int64))
        if not self.settings.skip_infeasible:
            return ids
        return self.drop_infeasible(round_idx, ids, self.settings.batch_size)

    # ------------------------------------------------------------------ plans

    def plans(self, round_idx: int, cohort: I64, default: LocalPlan) -> Sequence[LocalPlan]:
        """One plan per cohort member: allocated steps, cut where the device is late."""
        ids = np.asarray(cohort, dtype=np.int64)
        per = self.per_step(ids, default.batch_size)
        default_steps = self._default_steps(ids, default)
        assigned, predicted, target = default_steps, self._predicted(ids, default_steps, per), 0.0
        if self.settings.allocation and ids.size:
            assigned, predicted, target = self._allocate(ids, per)
        planned = self._cut_at_deadline(ids, assigned, per)
        self._set_round(_RoundPlan(ids, per, assigned, planned.copy(), predicted, target))
        if not self.settings.allocation and not self.settings.stop_at_deadline:
            return [default] * ids.size
        return [replace(default, epochs=None, steps=int(s)) for s in planned]

    def _set_round(self, plan: _RoundPlan) -> None:
        """Hold ``plan`` as the round in flight; weight factors ``planned / assigned``."""
        self._round = plan
        self._factor = {
            int(c): float(p / a)
            for c, p, a in zip(plan.cohort, plan.planned, plan.assigned, strict=True)
        }

    def _default_steps(self, ids: I64, plan: LocalPlan) -> I64:
        if plan.steps is not None:
            return np.full(ids.size, plan.steps, dtype=np.int64)
        batches = -(-np.maximum(self.sizes[ids], 1) // plan.batch_size)
        out: I64 = int(plan.epochs or 1) * batches
        return out

    def _predicted(self, ids: I64, steps: I64, per: I64) -> F64:
        return self.predictor.predict(ids, steps * per) if ids.size else np.zeros(0)

    def _allocate(self, ids: I64, per: I64) -> tuple[I64, F64, float]:
        s = self.settings
        assert s.deadline_s is not None  # ScheduleSettings guarantees it
        seconds_per_step = self.predictor.seconds_per_example(ids) * per
        fixed = self._link_s[self._rows(ids)] + self.predictor.config.overhead_s
        bounds = WorkBounds(s.min_steps, s.max_steps, 1)
        alloc = allocate_work(seconds_per_step, fixed, s.deadline_s, bounds, safety=s.safety)
        return alloc.work, alloc.compute_s, alloc.target_s

    def _cut_at_deadline(self, ids: I64, assigned: I64, per: I64) -> I64:
        """Steps each device really runs: all, or those done by the deadline (>= 1)."""
        s = self.settings
        if s.deadline_s is None or not s.stop_at_deadline or ids.size == 0 or self.cut is None:
            return assigned
        return self.cut(ids, assigned, per)

    def settle(self, client_id: int, steps_done: int) -> tuple[float, bool]:
        """Settle a real device's report of the steps it completed by the deadline.

        The simulator's rule (:func:`~fedstrata.scheduling.settle_reported`): partial
        work counts with the fraction done (:meth:`weight_factor`), and a device that
        completed nothing or less than ``settings.min_fraction`` of its assignment is
        a true straggler (dropped; recorded as the simulator's straggler, its
        assignment planned). The round's ``ScheduleStats`` and ``round_history`` then
        count it as partial or dropped. Returns ``(weight factor, dropped)``.

        Raises:
            DataError: ``client_id`` is not in the round in flight, or ``steps_done`` < 0.
        """
        plan = self._round
        where = None if plan is None else np.flatnonzero(plan.cohort == client_id)
        if plan is None or where is None or where.size == 0:
            raise DataError(f"settle: client {client_id} is not in the round in flight")
        i = int(where[0])
        assigned = plan.assigned[i : i + 1]
        done, dropped = settle_reported(
            assigned, np.array([steps_done], dtype=np.int64), self.settings.min_fraction
        )
        plan.planned[i] = assigned[0] if dropped[0] else done[0]
        factor = float(settlement_weights(assigned, done, dropped)[0])
        self._factor[client_id] = factor
        return factor, bool(dropped[0])

    def weight_factor(self, client_id: int) -> float:
        """Fraction of its assignment ``client_id`` completed this round (1 if unknown)."""
        return self._factor.get(client_id, 1.0)

    # ---------------------------------------------------------------- observe

    def observe(
        self, round_idx: int, reports: Sequence[ClientReport], round_s: float
    ) -> ScheduleStats | None:
        """Learn from the round and return its ``RoundMetrics.schedule``."""
        plan = self._round
        if plan is None or plan.cohort.size == 0:
            return None
        by_id = {r.client_id: r for r in reports}
        rows = [by_id.get(int(c)) for c in plan.cohort]
        status = self._status(plan, rows)
        done = np.array([r.examples if r else 0 for r in rows], dtype=np.int64)
        done = np.where(status <= WorkStatus.PARTIAL, done, 0)
        compute = np.array([r.compute_s if r else np.nan for r in rows])
        stats = self._stats(plan, rows, status, done, round_s)
        ok = (status <= WorkStatus.PARTIAL) & (done > 0)
        if ok.any():
            err = self.predictor.observe(plan.cohort[ok], done[ok], compute[ok])
            stats = replace(
                stats,
                predictor_mape_last=err.last_mape,
                predictor_mape_cumulative=err.cumulative_mape,
            )
        if self._skipped is not None and self._skipped[0] == round_idx:
            stats = replace(stats, skipped_infeasible=self._skipped[1])
        self._write_back(round_idx, plan, status, done, np.where(ok, compute, np.nan))
        self._feedback(round_idx, plan, rows, done)
        return stats

    @staticmethod
    def _status(plan: _RoundPlan, rows: list[ClientReport | None]) -> NDArray[np.int8]:
        codes = []
        for r, a, p in zip(rows, plan.assigned, plan.planned, strict=True):
            if r is None or r.status == "failed":
                codes.append(WorkStatus.FAILED)
            elif r.status == "late":
                codes.append(WorkStatus.DROPPED)
            else:
                codes.append(WorkStatus.COMPLETED if p >= a else WorkStatus.PARTIAL)
        return np.array(codes, dtype=np.int8)

    def _stats(
        self,
        plan: _RoundPlan,
        rows: list[ClientReport | None],
        status: NDArray[np.int8],
        done: I64,
        round_s: float,
    ) -> ScheduleStats:
        total = np.array([r.down_s + r.compute_s + r.up_s if r else 0.0 for r in rows])
        busy = np.where(status == WorkStatus.DROPPED, round_s, np.minimum(total, round_s))
        busy = np.where(status == WorkStatus.FAILED, 0.0, busy)
        useful = np.where(status <= WorkStatus.PARTIAL, busy, 0.0)
        span = max(round_s, 1e-12)
        return ScheduleStats(
            **asdict(round_utilization(busy, span, done)),
            useful_utilization=float(np.mean(useful / span)),
            partial=int(np.sum(status == WorkStatus.PARTIAL)),
            dropped=int(np.sum(status == WorkStatus.DROPPED)),
            target_s=plan.target_s,
            mean_steps=float(plan.planned.mean()),
        )

    def _write_back(
        self, round_idx: int, plan: _RoundPlan, status: NDArray[np.int8], done: I64, actual: F64
    ) -> None:
        if self.registry is None:
            return
        batch = HistoryBatch(
            plan.cohort,
            np.full(plan.cohort.size, round_idx, dtype=np.int64),
            plan.assigned * plan.per_step,
            np.minimum(done, plan.assigned * plan.per_step),
            plan.predicted_s,
            actual,
            status,
        )
        self.registry.record_history(batch)

    def _feedback(
        self, round_idx: int, plan: _RoundPlan, rows: list[ClientReport | None], done: I64
    ) -> None:
        if self.selector is None:
            return
        loss = np.array([r.train_loss if r and r.train_loss is not None else np.nan for r in rows])
        loss = np.where(done > 0, loss, np.nan)
        dur = np.array([r.down_s + r.compute_s + r.up_s if r else np.inf for r in rows])
        self.selector.feedback(
            round_idx, plan.cohort, num_samples=done, mean_sq_loss=loss**2, duration_s=dur
        )
