"""Partial work: a trainer that stops between local steps when asked (no framework).

A deployed client under a round deadline trains step by step and stops when its time
is up (:mod:`fedstrata.runtime.settle`); the center then weights its update by the
fraction of its assigned steps it completed (the simulator's settlement,
:func:`fedstrata.scheduling.settle_reported`). That needs a trainer that can stop:
:class:`StoppableTrainer` is a :class:`~fedstrata.core.training.Trainer` with
:meth:`~StoppableTrainer.train_until`, which checks a :data:`StopCheck` before every
local step and reports the steps it ran in ``TrainResult.num_steps``.

The contract that makes partial work equal to the simulator's: the first ``k`` steps
of a ``steps = n`` plan are exactly a ``steps = k`` plan (same minibatches, same
optimizer arithmetic), so an update stopped after ``k`` steps is the update the
simulator computes for a device that finishes ``k`` steps by the deadline. The torch
adapter's trainer satisfies it (its minibatch order and optimizers never look at the
total step count).

A trainer without ``train_until`` (a user's own :class:`Trainer`) cannot stop early:
the runtime's client says so once (WARNING) and runs its full assignment, which the
center then judges against the deadline as before (late: dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from fedstrata.core.context import ClientContext
from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.training import LocalData, LocalPlan, TrainResult

__all__ = ["NEVER_STOP", "StopCheck", "StoppableTrainer"]

StopCheck = Callable[[], bool]
"""Asked before each local step; True: stop now (the steps run so far are kept)."""


def _never() -> bool:
    return False


NEVER_STOP: StopCheck = _never
"""A stop check that never stops (full work)."""


@runtime_checkable
class StoppableTrainer(Protocol):
    """A trainer that can stop between local steps (see the module docstring)."""

    @property
    def spec(self) -> ParamSpec: ...

    def train_until(
        self,
        params: FloatVector,
        data: LocalData,
        plan: LocalPlan,
        ctx: ClientContext,
        out: FloatVector,
        *,
        stop: StopCheck,
    ) -> TrainResult:
        """``Trainer.train``, asking ``stop()`` before every local step; writes the delta
        of the steps run into ``out`` and reports them in ``TrainResult.num_steps``.

        A loop that cannot tell its steps (a task's own loop that never drew from the
        round's minibatches) reports ``num_steps == 0`` with a positive
        ``num_examples``: the caller then counts its work as full.
        """
        ...
