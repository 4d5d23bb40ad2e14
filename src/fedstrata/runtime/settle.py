"""Partial work in deployment: a client trains against the round deadline and stops.

Under deadline scheduling the center's task carries :class:`PartialWork` terms. The
client agent then trains its assigned steps one by one (:class:`LocalTraining` over a
:class:`~fedstrata.core.partial_work.StoppableTrainer`) and stops when its time is up:

* **when**: :class:`StopRule`. The deadline (``TaskSpec.deadline_s``, seconds from the
  round's start at the center) is measured on the client's own monotonic clock from
  the moment it received the task, so a clock offset between machines never matters
  and the task's travel time only makes the client stop early (safe). It keeps back
  ``reserve_fraction`` of the deadline (default 10 %: secure aggregation's masking and
  its ``INPUT`` step, scheduling jitter) and, for the upload, the seconds its download
  of the round's model took (an update is never larger than the dense model, so the
  measured download bounds its upload). Stop time: ``received + deadline * (1 -
  reserve_fraction) - download_s``.
* **what counts**: the simulator's settlement (:func:`~fedstrata.scheduling.settle_reported`,
  :func:`~fedstrata.scheduling.settlement_weights`): ``done`` of ``assigned`` steps
  weighs ``done / assigned`` (when the terms say ``weighted``: not under differential
  privacy, where the simulator keeps every accepted update's weight); nothing done, or
  less than ``min_fraction`` of the assignment, is a true straggler, which sends
  nothing (as the simulator's straggler, which arrives after the deadline) — under
  secure aggregation it withdraws from the protocol so that no step waits for it.
  The center settles plaintext updates itself from the reported steps
  (:meth:`~fedstrata.runtime.scheduling.CenterScheduler.settle`); under secure
  aggregation the client folds the factor into its integer weight before masking,
  exactly where the simulator folds it.
* **who cannot stop**: a trainer without ``train_until`` (a user's own
  :class:`~fedstrata.core.training.Trainer`), or a task loop that never draws from
  ``ctx.batches()`` (it reports 0 steps without having been stopped), cannot do partial
  work: the client says so once (WARNING) and counts its work as full; the center then
  judges its arrival against the deadline as before (late: dropped).

No gRPC, no asyncio: :meth:`LocalTraining.run` runs in the agent's worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedstrata.core.context import ClientContext
from fedstrata.core.params import FloatVector
from fedstrata.core.partial_work import StoppableTrainer
from fedstrata.core.training import LocalData, LocalPlan, Trainer, TrainResult
from fedstrata.errors import ConfigError
from fedstrata.runtime.sched_reports import PartialWork
from fedstrata.scheduling.allocation import settle_reported, settlement_weights

__all__ = ["DeadlineStop", "LocalOutcome", "LocalTraining", "StopRule"]

log = logging.getLogger(__name__)

Now = Callable[[], float]


@dataclass(frozen=True)
class StopRule:
    """When a client stops training (see the module docstring).

    Raises:
        ConfigError: ``reserve_fraction`` outside [0, 1).
    """

    reserve_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.reserve_fraction < 1:
            raise ConfigError(
                f"StopRule.reserve_fraction must be in [0, 1), got {self.reserve_fraction}"
            )

    def stop_at(self, received_s: float, deadline_s: float, download_s: float) -> float:
        """The client's clock time at which it stops: ``received_s + deadline_s * (1 -
        reserve_fraction) - download_s``."""
        return received_s + deadline_s * (1 - self.reserve_fraction) - download_s


@dataclass(eq=False)
class DeadlineStop:
    """A :data:`~fedstrata.core.partial_work.StopCheck`: True once ``now() >= at_s``;
    ``fired`` remembers that it said so (the trainer was stopped)."""

    at_s: float
    now: Now = time.monotonic
    fired: bool = False

    def __call__(self) -> bool:
        if self.now() >= self.at_s:
            self.fired = True
        return self.fired


@dataclass(frozen=True)
class LocalOutcome:
    """One round's local training as settled at the client.

    Attributes:
        result: the trainer's result.
        assigned: steps the plan assigned (None: an epochs plan, no partial work).
        steps: steps completed (the assignment when work counts as full).
        dropped: too little work: nothing is sent.
        factor: the weight factor ``done / assigned`` (1 when not weighted).
    """

    result: TrainResult
    assigned: int | None
    steps: int
    dropped: bool = False
    factor: float = 1.0


class LocalTraining:
    """A client's local training under a task's partial-work terms (one per agent).

    Args:
        trainer: the client's trainer.
        client_id: for messages.
        now: the client's monotonic clock (tests inject a fake).
    """

    def __init__(self, trainer: Trainer, client_id: int, now: Now = time.monotonic) -> None:
        self.trainer, self.client_id, self.now = trainer, client_id, now
        self._warned = False

    def run(
        self,
        params: FloatVector,
        data: LocalData,
        plan: LocalPlan,
        ctx: ClientContext,
        out: FloatVector,
        *,
        terms: PartialWork | None,
        stop_at_s: float | None,
    ) -> LocalOutcome:
        """Train ``plan``; with ``terms`` and a stop time, stop then and settle."""
        assigned = plan.steps
        if terms is None or stop_at_s is None or assigned is None:
            result = self.trainer.train(params, data, plan, ctx, out)
            return LocalOutcome(result, assigned, result.num_steps)
        if not isinstance(self.trainer, StoppableTrainer):
            self._warn_once(f"its trainer {type(self.trainer).__name__} has no train_until")
            return LocalOutcome(
                self.trainer.train(params, data, plan, ctx, out), assigned, assigned
            )
        stop = DeadlineStop(stop_at_s, self.now)
        result = self.trainer.train_until(params, data, plan, ctx, out, stop=stop)
        steps = result.num_steps
        if steps == 0 and not stop.fired:  # a loop that never drew ctx.batches()
            self._warn_once("its task loop did not draw its minibatches from ctx.batches()")
            return LocalOutcome(result, assigned, assigned)
        return settle_locally(result, assigned, steps, terms)

    def _warn_once(self, why: str) -> None:
        if not self._warned:
            log.warning(
                "client %d cannot stop at the round deadline (%s): it runs its whole "
                "assignment each round; see docs/runtime.md, 'Partial work'",
                self.client_id, why,
            )  # fmt: skip
            self._warned = True


def settle_locally(
    result: TrainResult, assigned: int, steps: int, terms: PartialWork
) -> LocalOutcome:
    """The simulator's settlement of ``steps`` done of ``assigned`` under ``terms``."""
    a = np.array([assigned], dtype=np.int64)
    done, dropped = settle_reported(a, np.array([steps], dtype=np.int64), terms.min_fraction)
    factor = float(settlement_weights(a, done, dropped)[0]) if terms.weighted else 1.0
    return LocalOutcome(result, assigned, int(min(steps, assigned)), bool(dropped[0]), factor)
