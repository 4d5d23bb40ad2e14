"""Staged privacy-budget allocation: each round's noise, and the stop when ε is spent.

A total budget (ε, δ) is split across stages (default: initial / middle / final with
ρ-weights 0.3 / 0.5 / 0.2 over equal thirds of the planned rounds);
:func:`~fedstrata.privacy.calibration.calibrate_stages` turns the split into one
noise multiplier per stage so the whole planned schedule composes to ε within
``rel_tol`` below the budget, never above. A uniform schedule is one stage.

Stages end by round count, or earlier when a :class:`PlateauSwitch` sees the
training loss plateau (relative improvement below ``rel_tol`` between the last two
windows). An early switch re-calibrates the remaining stages on the remaining
rounds, with the rounds already run as a fixed prefix, so the total still lands on
the budget. (Dynamic allocation in the spirit of Lee & Kifer, "Concentrated
Differentially Private Gradient Descent with Adaptive per-Iteration Privacy
Budget", KDD 2018.)

Driver protocol, once per round ``r`` (``r`` = 0, 1, …)::

    try:
        allocator.check_round(r)          # raises before any client work is spent
    except PrivacyBudgetExhausted:
        save_final_state(); break
    sigma = allocator.noise_multiplier(r) # pass to CentralGaussian.add_noise
    ...                                   # run the round
    metrics = allocator.record(r)         # PrivacyRoundMetrics for the run store
    allocator.observe_progress(eval_loss) # optional; may switch stage early

Rounds past ``planned_rounds`` keep the last stage's σ and run for as long as the
budget allows (usually none: the plan spends it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fedstrata.errors import ConfigError
from fedstrata.privacy.accounting import AccountantState

__all__ = [
    "DEFAULT_STAGES",
    "AllocatorState",
    "PlateauSwitch",
    "PrivacyRoundMetrics",
    "StagePlan",
    "StageSpec",
    "check_stages",
    "is_plateau",
    "split_rounds",
]


@dataclass(frozen=True)
class StageSpec:
    """A stage's share of the rounds and of the (ρ-scale) budget.

    Raises:
        ConfigError: a fraction or weight outside (0, 1].
    """

    fraction_of_rounds: float
    budget_weight: float
    name: str = ""

    def __post_init__(self) -> None:
        for field in ("fraction_of_rounds", "budget_weight"):
            value = getattr(self, field)
            if not (math.isfinite(value) and 0 < value <= 1):
                raise ConfigError(f"StageSpec.{field} must be in (0, 1], got {value!r}")


DEFAULT_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1 / 3, 0.3, "initial"),
    StageSpec(1 / 3, 0.5, "middle"),
    StageSpec(1 / 3, 0.2, "final"),
)


@dataclass(frozen=True)
class PlateauSwitch:
    """Advance the stage when the loss stops improving.

    The loss has plateaued when the mean of the last ``window`` losses improves on
    the mean of the ``window`` before by less than ``rel_tol`` (relative). At least
    ``2 * window`` losses must have been observed in the current stage.

    Raises:
        ConfigError: ``window < 1`` or ``rel_tol`` not in [0, 1).
    """

    window: int = 5
    rel_tol: float = 0.01

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError(f"PlateauSwitch.window must be >= 1, got {self.window}")
        if not 0 <= self.rel_tol < 1:
            raise ConfigError(f"PlateauSwitch.rel_tol must be in [0, 1), got {self.rel_tol!r}")


def is_plateau(losses: Sequence[float], window: int, rel_tol: float) -> bool:
    """True when the last ``window`` losses improve on the previous ``window`` by < ``rel_tol``."""
    if len(losses) < 2 * window:
        return False
    previous = math.fsum(losses[-2 * window : -window]) / window
    last = math.fsum(losses[-window:]) / window
    return (previous - last) < rel_tol * abs(previous)


def split_rounds(total: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """Split ``total`` rounds by ``fractions`` (largest remainder), every part >= 1.

    Raises:
        ConfigError: fewer rounds than parts.
    """
    if total < len(fractions):
        raise ConfigError(
            f"planned_rounds={total} must be >= the number of stages {len(fractions)}"
        )
    norm = math.fsum(fractions)
    exact = [total * f / norm for f in fractions]
    parts = [max(1, math.floor(x)) for x in exact]
    order = sorted(range(len(parts)), key=lambda i: parts[i] - exact[i])
    i = 0
    while sum(parts) != total:
        j = order[i % len(order)]
        step = 1 if sum(parts) < total else -1
        if parts[j] + step >= 1:
            parts[j] += step
        i += 1
    return tuple(parts)


@dataclass(frozen=True)
class StagePlan:
    """One stage of the plan: rounds ``[start_round, end_round)`` at ``noise_multiplier``."""

    name: str
    start_round: int
    end_round: int
    noise_multiplier: float
    budget_weight: float


@dataclass(frozen=True)
class PrivacyRoundMetrics:
    """What one round did to the budget (for the run store / metric events).

    Attributes:
        round_idx: the round recorded.
        epsilon_spent: ε spent after this round, at the allocator's δ.
        remaining_epsilon: budget ε minus ``epsilon_spent``.
        noise_multiplier: σ used in this round.
        stage: index of the stage the round belonged to.
        stage_name: that stage's name.
    """

    round_idx: int
    epsilon_spent: float
    remaining_epsilon: float
    noise_multiplier: float
    stage: int
    stage_name: str


@dataclass(frozen=True)
class AllocatorState:
    """What :class:`~fedstrata.privacy.BudgetAllocator` must checkpoint.

    Attributes:
        accountant: the recorded rounds.
        plan: the current (possibly re-calibrated) plan.
        planned_epsilon: ε the plan composes to.
        losses: ``(rounds recorded when observed, loss)`` pairs fed to the detector.
    """

    accountant: AccountantState
    plan: tuple[StagePlan, ...]
    planned_epsilon: float
    losses: tuple[tuple[int, float], ...] = ()


def check_stages(stages: Sequence[StageSpec]) -> tuple[StageSpec, ...]:
    """Validate a stage list: non-empty, fractions and weights each summing to 1.

    Raises:
        ConfigError: the list is empty or a sum is off.
    """
    stages = tuple(stages)
    if not stages:
        raise ConfigError("stages must contain at least one StageSpec")
    for field in ("fraction_of_rounds", "budget_weight"):
        total = math.fsum(getattr(s, field) for s in stages)
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"stages' {field} must sum to 1, got {total:.6g}")
    return stages
