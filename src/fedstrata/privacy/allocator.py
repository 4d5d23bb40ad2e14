"""The staged budget allocator: a thin stateful shell over the calibration.

See :mod:`fedstrata.privacy.budget` for the stage model and the driver protocol.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from fedstrata.core.statepart import JsonValue, StatePart
from fedstrata.errors import CheckpointCorrupt, ConfigError, PrivacyBudgetExhausted
from fedstrata.privacy.accounting import (
    DEFAULT_DISCRETIZATION,
    AccountantState,
    AccountingMethod,
    PrivacyAccountant,
    RoundEvent,
    Sampling,
    count_events,
)
from fedstrata.privacy.budget import (
    DEFAULT_STAGES,
    AllocatorState,
    PlateauSwitch,
    PrivacyRoundMetrics,
    StagePlan,
    StageSpec,
    check_stages,
    is_plateau,
    split_rounds,
)
from fedstrata.privacy.calibration import calibrate_stages

__all__ = ["BudgetAllocator"]

logger = logging.getLogger(__name__)


class BudgetAllocator:
    """Sets each round's noise multiplier and stops training when (ε, δ) is spent.

    Args:
        total_epsilon: the ε budget for the whole run.
        delta: the δ of the budget (e.g. ``1 / population``-ish or smaller).
        planned_rounds: rounds the budget is planned over.
        sampling_rate: per-round client sampling rate ``q`` (cohort / population).
        stages: stage specs; fractions and weights each sum to 1.
        accountant: ``"pld"`` (default) or ``"rdp"``; fixed-size sampling needs RDP.
        sampling: cohort sampling scheme (default Poisson).
        switch: plateau detector for early stage switches (default: by rounds only).
        discretization: PLD discretisation interval.
        rel_tol: the planned ε lands in ``[(1 - rel_tol) ε, ε]``.

    Raises:
        ConfigError: any argument out of range (named in the message).
    """

    def __init__(
        self,
        total_epsilon: float,
        delta: float,
        planned_rounds: int,
        sampling_rate: float,
        *,
        stages: Sequence[StageSpec] = DEFAULT_STAGES,
        accountant: AccountingMethod | str = AccountingMethod.PLD,
        sampling: Sampling | None = None,
        switch: PlateauSwitch | None = None,
        discretization: float = DEFAULT_DISCRETIZATION,
        rel_tol: float = 1e-3,
    ) -> None:
        if not (math.isfinite(total_epsilon) and total_epsilon > 0):
            raise ConfigError(f"total_epsilon must be a finite number > 0, got {total_epsilon!r}")
        if not (math.isfinite(sampling_rate) and 0 < sampling_rate <= 1):
            raise ConfigError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
        self.total_epsilon = float(total_epsilon)
        self.planned_rounds = int(planned_rounds)
        self.sampling_rate = float(sampling_rate)
        self.stages = check_stages(stages)
        self.switch = switch
        self.rel_tol = rel_tol
        self._accountant = PrivacyAccountant(
            delta, sampling=sampling, method=accountant, discretization=discretization
        )
        rounds = split_rounds(self.planned_rounds, [s.fraction_of_rounds for s in self.stages])
        self._plan: tuple[StagePlan, ...] = ()
        self._losses: list[tuple[int, float]] = []
        self._replan(0, rounds)

    @classmethod
    def uniform(
        cls,
        total_epsilon: float,
        delta: float,
        planned_rounds: int,
        sampling_rate: float,
        *,
        accountant: AccountingMethod | str = AccountingMethod.PLD,
        sampling: Sampling | None = None,
        discretization: float = DEFAULT_DISCRETIZATION,
        rel_tol: float = 1e-3,
    ) -> BudgetAllocator:
        """One stage: the same noise multiplier every round.

        Raises:
            ConfigError: any argument out of range.
        """
        return cls(
            total_epsilon,
            delta,
            planned_rounds,
            sampling_rate,
            stages=(StageSpec(1.0, 1.0, "uniform"),),
            accountant=accountant,
            sampling=sampling,
            discretization=discretization,
            rel_tol=rel_tol,
        )

    # ----------------------------------------------------------------- plan
    def _replan(self, first_stage: int, rounds: tuple[int, ...]) -> None:
        """Calibrate stages ``first_stage..`` over ``rounds``, after the rounds already run."""
        acc = self._accountant
        remaining = self.stages[first_stage:]
        calibration = calibrate_stages(
            self.total_epsilon,
            acc.delta,
            self.sampling_rate,
            rounds,
            tuple(s.budget_weight for s in remaining),
            prefix=count_events(acc.events),
            sampling=acc.sampling,
            method=acc.method,
            discretization=acc.discretization,
            rel_tol=self.rel_tol,
        )
        start = acc.rounds
        new: list[StagePlan] = list(self._plan[:first_stage])
        for offset, (spec, n, sigma) in enumerate(
            zip(remaining, rounds, calibration.noise_multipliers, strict=True)
        ):
            name = spec.name or f"stage{first_stage + offset}"
            new.append(StagePlan(name, start, start + n, sigma, spec.budget_weight))
            start += n
        self._plan = tuple(new)
        self._planned_epsilon = calibration.epsilon
        self._log_plan(first_stage)

    def _log_plan(self, first_stage: int) -> None:
        stages_text = ", ".join(
            f"{p.name}[{p.start_round},{p.end_round}) sigma={p.noise_multiplier:.4g}"
            for p in self._plan[first_stage:]
        )
        logger.info(
            "privacy plan from round %d: %s (planned epsilon=%.4g of %.4g)",
            self._accountant.rounds,
            stages_text,
            self._planned_epsilon,
            self.total_epsilon,
        )

    @property
    def plan(self) -> tuple[StagePlan, ...]:
        """The current plan, one entry per stage (for reports)."""
        return self._plan

    @property
    def stage_boundaries(self) -> tuple[int, ...]:
        """First round of each stage in the current plan."""
        return tuple(p.start_round for p in self._plan)

    @property
    def planned_epsilon(self) -> float:
        """ε the full current plan composes to (<= ``total_epsilon``)."""
        return self._planned_epsilon

    @property
    def accountant(self) -> PrivacyAccountant:
        """The accountant that holds the recorded rounds."""
        return self._accountant

    def stage_of(self, round_idx: int) -> int:
        """Index of the stage ``round_idx`` falls into (the last one past the plan)."""
        for i, p in enumerate(self._plan):
            if round_idx < p.end_round:
                return i
        return len(self._plan) - 1

    @property
    def current_stage(self) -> int:
        """The stage of the next round to run."""
        return self.stage_of(self._accountant.rounds)

    def noise_multiplier(self, round_idx: int) -> float:
        """σ for ``round_idx`` under the current plan."""
        return self._plan[self.stage_of(round_idx)].noise_multiplier

    # -------------------------------------------------------------- spending
    def _expect_next(self, round_idx: int) -> None:
        if round_idx != self._accountant.rounds:
            raise ConfigError(
                f"round_idx must be the next unrecorded round {self._accountant.rounds}, "
                f"got {round_idx}"
            )

    def check_round(self, round_idx: int, sampling_rate: float | None = None) -> None:
        """Raise if running ``round_idx`` would push ε above the budget.

        Args:
            round_idx: the next round.
            sampling_rate: this round's ``q`` (default: the planned one).

        Raises:
            ConfigError: ``round_idx`` is not the next unrecorded round, or
                ``sampling_rate`` is outside ``(0, 1]``.
            PrivacyBudgetExhausted: the round would exceed ``total_epsilon``.
        """
        self._expect_next(round_idx)
        sigma = self.noise_multiplier(round_idx)
        q = self.sampling_rate if sampling_rate is None else sampling_rate
        eps = self._accountant.epsilon_after(sigma, q)
        if eps > self.total_epsilon:
            raise PrivacyBudgetExhausted(
                f"round {round_idx} would raise ε from {self.epsilon_spent:.6g} to {eps:.6g}, "
                f"above the budget ε={self.total_epsilon:g} at δ={self._accountant.delta:g}; "
                f"training stops after {round_idx} rounds — save the final state"
            )

    def record(self, round_idx: int, sampling_rate: float | None = None) -> PrivacyRoundMetrics:
        """Record that ``round_idx`` ran with this plan's σ; returns its metrics.

        Args:
            round_idx: the next round.
            sampling_rate: the ``q`` the round ran at (default: the planned one).
                The plan is not re-calibrated when it differs.

        Raises:
            ConfigError: ``round_idx`` is not the next unrecorded round, or
                ``sampling_rate`` is outside ``(0, 1]``.
            PrivacyBudgetExhausted: the round exceeds the budget (nothing is recorded).
        """
        self.check_round(round_idx, sampling_rate)
        stage = self.stage_of(round_idx)
        sigma = self._plan[stage].noise_multiplier
        q = self.sampling_rate if sampling_rate is None else sampling_rate
        eps = self._accountant.record_round(sigma, q)
        return PrivacyRoundMetrics(
            round_idx, eps, self.total_epsilon - eps, sigma, stage, self._plan[stage].name
        )

    @property
    def epsilon_spent(self) -> float:
        """ε spent by the recorded rounds, at the budget's δ."""
        return self._accountant.epsilon()

    def remaining_epsilon(self) -> float:
        """Budget ε minus ε spent (>= 0)."""
        return max(0.0, self.total_epsilon - self.epsilon_spent)

    # ------------------------------------------------------------ checkpoint
    def state(self) -> AllocatorState:
        """Snapshot for a checkpoint (restore into an allocator built with the same args)."""
        return AllocatorState(
            self._accountant.state(), self._plan, self._planned_epsilon, tuple(self._losses)
        )

    def load_state(self, state: AllocatorState) -> None:
        """Restore a snapshot taken by :meth:`state`.

        Raises:
            ConfigError: the snapshot's plan has a different number of stages.
        """
        if len(state.plan) != len(self.stages):
            raise ConfigError(
                f"AllocatorState has {len(state.plan)} stages, this allocator {len(self.stages)}"
            )
        self._accountant.load_state(state.accountant)
        self._plan = state.plan
        self._planned_epsilon = state.planned_epsilon
        self._losses = list(state.losses)

    def state_dict(self) -> StatePart:
        """:meth:`state` as JSON (ε spent is never lost: every recorded round is in it)."""
        st = self.state()
        meta: dict[str, JsonValue] = {
            "events": [[e.noise_multiplier, e.sampling_rate] for e in st.accountant.events],
            "spent": list(st.accountant.spent),
            "plan": [
                [p.name, p.start_round, p.end_round, p.noise_multiplier, p.budget_weight]
                for p in st.plan
            ],
            "planned_epsilon": st.planned_epsilon,
            "losses": [[r, loss] for r, loss in st.losses],
        }
        return StatePart(meta=meta)

    def load_state_dict(self, part: StatePart) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            CheckpointCorrupt: the part is not an allocator's state or does not fit.
        """
        try:
            accountant = AccountantState(
                tuple(RoundEvent(float(s), float(q)) for s, q in part.value("events")),
                tuple(float(e) for e in part.value("spent")),
            )
            plan = tuple(
                StagePlan(str(n), int(a), int(b), float(s), float(w))
                for n, a, b, s, w in part.value("plan")
            )
            losses = tuple((int(r), float(v)) for r, v in part.value("losses"))
            state = AllocatorState(accountant, plan, float(part.value("planned_epsilon")), losses)
            self.load_state(state)
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointCorrupt(f"privacy allocator state does not fit: {exc}") from exc

    # -------------------------------------------------------------- progress
    def observe_progress(self, loss: float) -> bool:
        """Feed the latest evaluation loss; returns True if the stage switched early.

        Raises:
            ConfigError: ``loss`` is not finite.
        """
        if not math.isfinite(loss):
            raise ConfigError(f"loss must be finite, got {loss!r}")
        done = self._accountant.rounds
        self._losses.append((done, float(loss)))
        if self.switch is None or done >= self.planned_rounds:
            return False
        stage = self.stage_of(done)
        later = len(self._plan) - stage - 1
        if later == 0 or self.planned_rounds - done < later:
            return False
        start = self._plan[stage].start_round
        losses = [value for r, value in self._losses if r > start]
        if not is_plateau(losses, self.switch.window, self.switch.rel_tol):
            return False
        self._advance(stage, done)
        return True

    def _advance(self, stage: int, done: int) -> None:
        """End ``stage`` now and re-calibrate the later stages over the rounds left."""
        old = self._plan[stage]
        self._plan = (
            *self._plan[:stage],
            StagePlan(old.name, old.start_round, done, old.noise_multiplier, old.budget_weight),
        )
        fractions = [s.fraction_of_rounds for s in self.stages[stage + 1 :]]
        logger.info("privacy stage %r plateaued at round %d; switching early", old.name, done)
        self._replan(stage + 1, split_rounds(self.planned_rounds - done, fractions))
