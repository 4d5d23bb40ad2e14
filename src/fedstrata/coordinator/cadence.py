"""When and how the model is evaluated centrally: one rule for every driver (the
simulator's and the runtime's)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedstrata.core.params import FloatVector
from fedstrata.core.training import LocalData, Trainer

__all__ = ["Evaluation", "evaluate_round", "evaluation_due"]

_HEADLINE = ("loss", "accuracy")  # a task's evaluate metrics stored as fields, not extras


def evaluation_due(round_idx: int, every: int, *, last: bool) -> bool:
    """Whether the model after round ``round_idx`` (0-based) is evaluated.

    Every ``every`` rounds (after rounds ``every - 1``, ``2 * every - 1``, …) and after
    the ``last`` one, whatever the cadence.
    """
    return last or (round_idx + 1) % every == 0


@dataclass(frozen=True)
class Evaluation:
    """The round's central evaluation (all None / empty when not due)."""

    accuracy: float | None = None
    loss: float | None = None
    extras: dict[str, float] | None = None


def evaluate_round(
    trainer: Trainer,
    test_data: LocalData | None,
    params: FloatVector,
    round_idx: int,
    *,
    rounds: int,
    eval_every: int,
) -> Evaluation:
    """Evaluate ``params`` centrally when the cadence says so."""
    last = round_idx == rounds - 1
    if test_data is None or not evaluation_due(round_idx, eval_every, last=last):
        return Evaluation()
    ev = trainer.evaluate(params, test_data)
    acc = None if math.isnan(ev.accuracy) else ev.accuracy
    extras = {f"test_{k}": v for k, v in ev.metrics.items() if k not in _HEADLINE}
    return Evaluation(acc, ev.loss, extras)
