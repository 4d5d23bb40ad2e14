"""Issue 12 part 4: distributed DP's noise-share calibration and its budget hook."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedstrata.core.context import RoundContext
from fedstrata.errors import ConfigError, PrivacyBudgetExhausted
from fedstrata.privacy import BudgetAllocator, Sampling, SamplingKind
from fedstrata.privacy.distributed import TAIL_STDS, noise_shares, ring_sensitivity
from fedstrata.privacy.distributed_hook import DistributedDPHook


def _allocator(rounds: int = 3, staged: bool = True) -> BudgetAllocator:
    sampling = Sampling(SamplingKind.FIXED_SIZE, 100)
    if not staged:
        return BudgetAllocator.uniform(2.0, 1e-5, rounds, 0.1, accountant="rdp", sampling=sampling)
    return BudgetAllocator(2.0, 1e-5, rounds, 0.1, accountant="rdp", sampling=sampling)


def test_shares_follow_the_staged_plan_for_the_least_survivors() -> None:
    """Issue 12 part 4: share std of round r = sigma_r * sensitivity / sqrt(n_min)."""
    alloc = _allocator()
    sens = ring_sensitivity(0.5, 32767.0, 400)
    assert sens == pytest.approx(0.5 * 32767 + 20)
    shares = noise_shares(alloc, sens, 9, "skellam")
    for r in range(3):
        assert shares.std(r) == pytest.approx(alloc.noise_multiplier(r) * sens / 3)
    assert shares.bound == math.ceil(TAIL_STDS * max(shares.share_stds))
    assert len({round(s, 6) for s in shares.share_stds}) > 1  # staged: stds differ
    draw = shares(0, 20_000, np.random.default_rng(0))
    assert draw.std() == pytest.approx(shares.std(0), rel=0.03)
    with pytest.raises(ConfigError, match="min_survivors"):
        noise_shares(alloc, sens, 0, "skellam")


def test_hook_charges_every_round_and_stops_when_the_budget_is_spent() -> None:
    """Issue 12 part 4: ε never decreases; the round past the plan is refused."""
    alloc = _allocator(rounds=2, staged=False)
    hook = DistributedDPHook(alloc, noise_shares(alloc, 1000.0, 5, "discrete_gaussian"))
    spent = []
    mean = np.ones(3, dtype=np.float32)
    for r in range(2):
        hook.start(r)
        assert hook.aggregate(mean, 5, RoundContext(r, 0)) is mean
        spent.append(hook.finish(r, 5, None).epsilon_spent)
    assert spent[0] < spent[1] <= 2.0
    with pytest.raises(PrivacyBudgetExhausted):
        hook.start(2)
