"""DP-FTRL (fedstrata.privacy.ftrl): the tree's intervals, its noise's variance, the
budget's calibration and monotone ε, the epoch order, and a run through the engine."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core.context import RoundContext
from fedstrata.errors import ConfigError, PrivacyBudgetExhausted
from fedstrata.privacy.ftrl import (
    EpochOrder,
    TreeBudget,
    TreeDPHook,
    TreeNoise,
    tree_epsilon,
    tree_nodes,
)


@given(st.integers(0, 5000))
def test_the_nodes_of_t_partition_the_first_t_leaves(t: int) -> None:
    leaves: list[int] = []
    for level, index in tree_nodes(t):
        leaves += range((index - 1) * 2**level + 1, index * 2**level + 1)
    assert sorted(leaves) == list(range(1, t + 1))
    assert len(tree_nodes(t)) <= max(1, math.ceil(math.log2(t + 1)))


def test_a_negative_step_is_refused() -> None:
    with pytest.raises(ConfigError, match="step"):
        tree_nodes(-1)


@pytest.mark.parametrize("t", [1, 3, 6, 7])
def test_the_prefix_noise_has_the_stated_variance(t: int) -> None:
    """n_t sums one node per set bit of t: variance popcount(t) * std^2 per coordinate."""
    noise = TreeNoise(size=200_000, std=2.0, root_seed=5)
    sample = noise.prefix(epoch=0, t=t)
    expected = bin(t).count("1") * 4.0
    assert sample.var() == pytest.approx(expected, rel=0.02)
    assert abs(sample.mean()) < 0.02 * math.sqrt(expected)


def test_the_noise_of_a_node_is_the_same_whenever_asked_and_differs_by_epoch() -> None:
    noise = TreeNoise(size=16, std=1.0, root_seed=3)
    assert np.array_equal(noise.node(0, 1, 1), noise.node(0, 1, 1))
    assert not np.array_equal(noise.node(0, 1, 1), noise.node(1, 1, 1))


def _hook(planned: int = 12, per_round: int = 5, clients: int = 20) -> TreeDPHook:
    order = EpochOrder(clients, per_round, root_seed=0)
    budget = TreeBudget(2.0, 1e-5, planned, order.rounds_per_epoch)
    noise = TreeNoise(8, budget.noise_multiplier * 1.0, root_seed=0)
    return TreeDPHook(budget, noise, per_round, per_round / clients)


def test_the_increments_telescope_to_the_noisy_prefix_sum_within_an_epoch() -> None:
    """The model carries S_t + n_t: the applied increments sum to the tree's prefix."""
    hook = _hook()
    update = np.full(8, 0.5, np.float32)  # mean of 5 clients' clipped updates
    applied = np.zeros(8)
    for r in range(4):  # one epoch: 20 clients / 5 per round
        hook.start(r)
        applied += hook.aggregate(update, 5, RoundContext(r, 0)).astype(np.float64) * 5
        hook.finish(r, 5, None)
    expected = 4 * 5 * 0.5 + hook.noise.prefix(0, 4)
    np.testing.assert_allclose(applied, expected, rtol=1e-5, atol=1e-4)


def test_the_budget_is_spent_within_epsilon_and_refuses_the_round_past_it() -> None:
    hook = _hook(planned=12)
    spent = []
    for r in range(12):
        hook.start(r)
        spent.append(hook.finish(r, 5, None).epsilon_spent)
    assert all(a <= b for a, b in itertools.pairwise(spent))
    assert spent[-1] <= 2.0 * (1 + 1e-9)
    r = 12
    while hook.budget.epsilon_after(r + 1) <= 2.0:
        hook.start(r)
        hook.finish(r, 5, None)
        r += 1
    with pytest.raises(PrivacyBudgetExhausted):
        hook.start(r)


@settings(max_examples=25, deadline=None)
@given(
    st.floats(0.5, 30.0),
    st.integers(1, 60),
    st.integers(1, 12),
)
def test_epsilon_never_decreases_with_rounds_and_falls_with_more_noise(
    sigma: float, rounds: int, per_epoch: int
) -> None:
    eps = tree_epsilon(sigma, rounds, per_epoch, 1e-5)
    assert tree_epsilon(sigma, rounds + 1, per_epoch, 1e-5) >= eps
    assert tree_epsilon(sigma * 1.5, rounds, per_epoch, 1e-5) <= eps


@settings(max_examples=10, deadline=None)
@given(st.floats(0.5, 8.0), st.integers(1, 120), st.integers(1, 20))
def test_the_calibrated_noise_never_overshoots_the_budget(
    epsilon: float, planned: int, per_epoch: int
) -> None:
    budget = TreeBudget(epsilon, 1e-5, planned, per_epoch)
    assert budget.epsilon_after(planned) <= epsilon
    slightly_less = budget.noise_multiplier / (1 + 3 * budget.rel_tol)
    assert tree_epsilon(slightly_less, planned, per_epoch, 1e-5) > epsilon


def test_the_epoch_order_puts_each_client_in_at_most_one_round_per_epoch() -> None:
    order = EpochOrder(num_clients=23, per_round=5, root_seed=4)
    assert order.rounds_per_epoch == 4
    for epoch in range(3):
        blocks = [order.block(epoch * 4 + j) for j in range(4)]
        seen = np.concatenate(blocks)
        assert len(seen) == 20
        assert len(np.unique(seen)) == 20
    assert not np.array_equal(order.block(0), order.block(4))  # a fresh shuffle
    online = np.arange(0, 23, 2, dtype=np.int64)
    chosen = order.select(1, online, 5, np.random.default_rng(0))
    assert set(chosen.tolist()) == set(order.block(1).tolist()) & set(online.tolist())


def test_a_cohort_larger_than_the_population_is_refused() -> None:
    with pytest.raises(ConfigError, match="clients_per_round"):
        EpochOrder(num_clients=4, per_round=5, root_seed=0)


RUN = (
    "data.name=synthetic",
    "data.num_clients=12",
    "data.synthetic_max_samples=40",
    "model.kind=logreg",
    "client.epochs=1",
    "rounds.rounds=6",
    "rounds.clients_per_round=4",
    "sim.workers=0",
    "output.run_store=false",
    "output.report=false",
    "output.progress=false",
    "privacy.mechanism=central",
    "privacy.tree_aggregation=true",
)


def test_a_run_takes_each_client_once_per_tree_and_reports_the_trees_epsilon() -> None:
    result = run(load_config(overrides=list(RUN))).simulation
    steps = [m.privacy.tree_step for m in result.rounds if m.privacy is not None]
    assert steps == [1, 2, 3, 1, 2, 3]
    assert all(m.clients_selected == 4 for m in result.rounds)
    last = result.rounds[-1].privacy
    assert last is not None
    assert last.epsilon_spent == pytest.approx(tree_epsilon(last.noise_multiplier, 6, 3, 1e-5))
    assert last.epsilon_spent <= 2.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 30), st.lists(st.booleans(), min_size=12, max_size=12))
def test_a_round_is_its_blocks_online_members_whoever_is_online(
    round_idx: int, online: list[bool]
) -> None:
    """The law behind DP-FTRL's accounting: the coordinator's cohort is the epoch
    order's block less the offline clients, for every set of online clients."""
    order = EpochOrder(num_clients=12, per_round=4, root_seed=3)
    coordinator = RoundCoordinator(RoundPolicy(4, 1, None, 3), selector=order)
    ids = np.flatnonzero(online).astype(np.int64)
    chosen = coordinator.select(round_idx, ids)
    assert set(chosen.tolist()) == set(order.block(round_idx).tolist()) & set(ids.tolist())


def test_offline_clients_leave_their_block_and_nobody_else_joins_it() -> None:
    """With fewer clients online than a block holds, the coordinator still asks the
    epoch order (each client at most once per tree), so a round is its block's online
    members; a run with devices offline half the time keeps to the blocks."""
    order = EpochOrder(num_clients=12, per_round=4, root_seed=0)
    coordinator = RoundCoordinator(RoundPolicy(4, 1, None, 0), selector=order)
    block = order.block(0)
    online = np.array([block[0], *np.setdiff1d(np.arange(12), block)[:3]], dtype=np.int64)
    assert coordinator.select(0, online).tolist() == [int(block[0])]
    result = run(load_config(overrides=[*RUN, "devices.availability=0.5"])).simulation
    selected = [m.clients_selected for m in result.rounds]
    assert all(n <= 4 for n in selected)
    assert min(selected) < 4
    steps = [m.privacy.tree_step for m in result.rounds if m.privacy is not None]
    assert steps == [1, 2, 3, 1, 2, 3]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (("privacy.mechanism=none",), "mechanism=central"),
        (("privacy.schedule=staged",), "schedule=uniform"),
        (("privacy.accountant=pld",), "rdp"),
        (("privacy.adaptive_clip=true",), "adaptive clipping"),
        (("secagg.enabled=true", "privacy.accountant=rdp"), "secure aggregation"),
    ],
)
def test_settings_dp_ftrl_cannot_honour_are_refused(extra: tuple[str, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[*RUN, *extra])
