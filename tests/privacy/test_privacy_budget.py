"""Budget calibration, the staged allocator, and halting at the budget."""

from __future__ import annotations

import dp_accounting as dpa
import pytest
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import ConfigError, PrivacyBudgetExhausted
from fedstrata.privacy import (
    BudgetAllocator,
    PlateauSwitch,
    RoundEvent,
    Sampling,
    StageSpec,
    calibrate_stages,
    epsilon_of_events,
    is_plateau,
    split_rounds,
)

DELTA = 1e-5


def _independent(
    sigmas: tuple[float, ...], rounds: tuple[int, ...], q: float, delta: float
) -> float:
    acc = PLDAccountant()  # dp-accounting's default discretisation, events built here
    for sigma, n in zip(sigmas, rounds, strict=True):
        event = (
            dpa.GaussianDpEvent(sigma)
            if q == 1
            else dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))
        )
        acc.compose(dpa.SelfComposedDpEvent(event, n))
    return float(acc.get_epsilon(delta))


schedules = st.fixed_dictionaries(
    {
        "epsilon": st.floats(0.3, 6.0),
        "delta": st.sampled_from([1e-3, 1e-5, 1e-7]),
        "q": st.sampled_from([0.01, 0.05, 0.2, 1.0]),
        "weights": st.lists(st.floats(0.05, 1.0), min_size=1, max_size=3),
        "rounds": st.integers(3, 60),
    }
)


@settings(max_examples=8, deadline=None)
@given(s=schedules)
def test_calibrated_schedule_lands_on_budget_never_above(s: dict) -> None:  # type: ignore[type-arg]
    fractions = [1.0] * len(s["weights"])
    rounds = split_rounds(s["rounds"], fractions)
    cal = calibrate_stages(s["epsilon"], s["delta"], s["q"], rounds, tuple(s["weights"]))
    assert s["epsilon"] * 0.99 <= cal.epsilon <= s["epsilon"]
    independent = _independent(cal.noise_multipliers, rounds, s["q"], s["delta"])
    assert independent <= s["epsilon"] * (1 + 1e-4)
    assert independent == pytest.approx(s["epsilon"], rel=0.01)
    # ρ shares follow the weights exactly: n_s / (2 σ_s²) ∝ w_s
    shares = [n / (2 * sig**2) for n, sig in zip(rounds, cal.noise_multipliers, strict=True)]
    total_w = sum(s["weights"])
    for share, w in zip(shares, s["weights"], strict=True):
        assert share / cal.rho_total == pytest.approx(w / total_w, rel=1e-9)


def _run_until_exhausted(alloc: BudgetAllocator, limit: int) -> int:
    for r in range(limit):
        try:
            alloc.check_round(r)
        except PrivacyBudgetExhausted:
            return r
        alloc.record(r)
    raise AssertionError("budget never ran out")


@settings(max_examples=4, deadline=None)
@given(epsilon=st.floats(0.5, 4.0), rounds=st.integers(3, 10), q=st.sampled_from([0.05, 1.0]))
def test_training_halts_exactly_when_budget_would_be_exceeded(
    epsilon: float, rounds: int, q: float
) -> None:
    alloc = BudgetAllocator(epsilon, DELTA, rounds, q)
    halt = _run_until_exhausted(alloc, rounds + 50)
    events = list(alloc.accountant.events)
    assert halt >= rounds  # the whole plan fits
    within = epsilon_of_events(events, DELTA)
    beyond = epsilon_of_events([*events, RoundEvent(alloc.noise_multiplier(halt), q)], DELTA)
    assert within <= epsilon < beyond
    assert alloc.epsilon_spent == pytest.approx(within)
    assert alloc.remaining_epsilon() >= 0
    with pytest.raises(PrivacyBudgetExhausted, match="save the final state"):
        alloc.record(halt)
    assert alloc.accountant.rounds == halt  # the refused round was not recorded


def test_uniform_schedule_halts_at_planned_round() -> None:
    alloc = BudgetAllocator.uniform(2.0, DELTA, planned_rounds=8, sampling_rate=0.1)
    assert len(alloc.plan) == 1
    assert _run_until_exhausted(alloc, 30) == 8
    metrics = alloc.accountant.spent
    assert metrics[-1] <= 2.0
    assert metrics[-1] == pytest.approx(2.0, rel=0.01)


def test_staged_plan_metrics_and_boundaries() -> None:
    alloc = BudgetAllocator(3.0, DELTA, 9, 0.1)
    assert alloc.stage_boundaries == (0, 3, 6)
    assert [p.name for p in alloc.plan] == ["initial", "middle", "final"]
    sigmas = [p.noise_multiplier for p in alloc.plan]
    assert sigmas[1] < sigmas[0] < sigmas[2]  # weight/round: middle most, final least
    seen = [alloc.record(r) for r in range(9)]
    assert [m.stage for m in seen] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert seen[4].noise_multiplier == sigmas[1]
    assert seen[4].stage_name == "middle"
    eps = [m.epsilon_spent for m in seen]
    assert eps == sorted(eps)
    assert eps[-1] == alloc.planned_epsilon <= 3.0
    assert _independent(tuple(sigmas), (3, 3, 3), 0.1, DELTA) == pytest.approx(eps[-1], rel=0.01)
    assert seen[-1].remaining_epsilon == pytest.approx(3.0 - eps[-1])


def test_plateau_switches_early_and_recalibrates_within_budget() -> None:
    alloc = BudgetAllocator(2.0, DELTA, 24, 0.1, switch=PlateauSwitch(window=2, rel_tol=0.05))
    original_middle = alloc.plan[1]
    switched_at = None
    for r in range(24):
        alloc.record(r)
        if alloc.observe_progress(1.0) and switched_at is None:  # flat loss: plateau
            switched_at = r + 1
    assert switched_at == 4  # 2 windows of 2 losses in stage 0
    assert alloc.plan[0].end_round == 4
    assert alloc.plan[1].start_round == 4
    assert alloc.plan[1] != original_middle
    assert alloc.epsilon_spent <= 2.0
    assert alloc.epsilon_spent == pytest.approx(2.0, rel=0.01)
    with pytest.raises(PrivacyBudgetExhausted):
        alloc.check_round(24)


def test_no_switch_without_detector_or_while_improving() -> None:
    alloc = BudgetAllocator(2.0, DELTA, 9, 0.1)
    alloc.record(0)
    assert not alloc.observe_progress(1.0)
    assert not is_plateau([5, 4, 3, 2], window=2, rel_tol=0.01)
    assert is_plateau([5, 5, 5, 5], window=2, rel_tol=0.01)
    assert not is_plateau([5, 5, 5], window=2, rel_tol=0.01)


def test_fixed_size_allocator_uses_rdp() -> None:
    sampling = Sampling("fixed_size", population_size=200)
    with pytest.raises(ConfigError, match="rdp"):
        BudgetAllocator(4.0, DELTA, 6, 0.1, sampling=sampling)
    alloc = BudgetAllocator(4.0, DELTA, 6, 0.1, sampling=sampling, accountant="rdp")
    assert alloc.planned_epsilon == pytest.approx(4.0, rel=0.01)
    assert alloc.planned_epsilon <= 4.0


@settings(max_examples=50, deadline=None)
@given(total=st.integers(3, 500), fractions=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=3))
def test_split_rounds_sums_and_every_stage_runs(total: int, fractions: list[float]) -> None:
    parts = split_rounds(total, fractions)
    assert sum(parts) == total
    assert min(parts) >= 1
    assert len(parts) == len(fractions)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"total_epsilon": 0.0}, "total_epsilon"),
        ({"sampling_rate": 0.0}, "sampling_rate"),
        ({"planned_rounds": 2}, "planned_rounds"),
        ({"stages": (StageSpec(0.5, 0.5), StageSpec(0.4, 0.5))}, "fraction_of_rounds"),
        ({"stages": ()}, "at least one"),
        ({"accountant": "moments"}, "method"),
    ],
)
def test_allocator_validation(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "total_epsilon": 1.0,
        "delta": DELTA,
        "planned_rounds": 6,
        "sampling_rate": 0.1,
    }
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        BudgetAllocator(**args)  # type: ignore[arg-type]


def test_check_round_must_be_next_round() -> None:
    alloc = BudgetAllocator.uniform(1.0, DELTA, 4, 0.1)
    with pytest.raises(ConfigError, match="next unrecorded round 0"):
        alloc.check_round(1)
    with pytest.raises(ConfigError, match=r"StageSpec\.budget_weight"):
        StageSpec(0.5, 0.0)


def test_allocator_checkpoint_resumes_exactly() -> None:
    first = BudgetAllocator(2.0, DELTA, 9, 0.1, switch=PlateauSwitch(window=1, rel_tol=0.5))
    for r in range(4):
        first.record(r)
        first.observe_progress(1.0)
    snapshot = first.state()
    second = BudgetAllocator(2.0, DELTA, 9, 0.1, switch=PlateauSwitch(window=1, rel_tol=0.5))
    second.load_state(snapshot)
    assert second.plan == first.plan
    assert second.epsilon_spent == first.epsilon_spent
    assert second.accountant.spent == first.accountant.spent
    assert second.record(4) == first.record(4)
