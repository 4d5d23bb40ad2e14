"""The spare pool's target and its load forecast."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.errors import ConfigError
from fedstrata.runtime.spares import LoadForecast, SparePolicy, SparePool, target_spares


def test_ten_percent_of_the_edges_needed_at_least_one():
    policy = SparePolicy(fraction=0.1, min_spares=1, edge_capacity=10)
    assert target_spares(policy, 0) == 1
    assert target_spares(policy, 100) == 1  # 10 edges -> 1 spare
    assert target_spares(policy, 101) == 2  # 11 edges -> 1.1 -> 2
    assert target_spares(policy, 250) == 3


@given(a=st.floats(0, 1e6), b=st.floats(0, 1e6), fraction=st.floats(0, 1))
def test_the_target_grows_with_the_load_and_never_drops_below_the_minimum(a, b, fraction):
    policy = SparePolicy(fraction=fraction, min_spares=2, edge_capacity=50)
    lo, hi = sorted((a, b))
    assert 2 <= target_spares(policy, lo) <= target_spares(policy, hi)


def test_the_forecast_follows_a_trend_ahead():
    f = LoadForecast(alpha=1.0, beta=1.0, horizon_rounds=3)
    assert f.predict() == 0.0
    for clients in (10, 20, 30, 40):
        f.observe(clients)
    assert f.predict() == pytest.approx(70.0)  # 40 + 3 rounds of +10
    shrinking = LoadForecast(alpha=1.0, beta=1.0, horizon_rounds=10)
    for clients in (30, 20, 10):
        shrinking.observe(clients)
    assert shrinking.predict() == 0.0  # never negative


@given(level=st.floats(0, 1e4), n=st.integers(1, 30))
def test_a_steady_load_is_predicted_steady(level, n):
    f = LoadForecast()
    for _ in range(n):
        f.observe(level)
    assert f.predict() == pytest.approx(level, rel=1e-9, abs=1e-9)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="fraction"):
        SparePolicy(fraction=1.5)
    with pytest.raises(ConfigError, match="edge_capacity"):
        SparePolicy(edge_capacity=0)
    with pytest.raises(ConfigError, match="alpha"):
        LoadForecast(alpha=0)


def test_the_pool_grows_ahead_of_the_load_shrinks_behind_it_and_replaces_promoted_spares():
    started, retired = [], []

    def start():
        started.append(len(started))
        return started[-1]

    pool = SparePool(
        SparePolicy(fraction=0.1, min_spares=1, edge_capacity=10),
        LoadForecast(alpha=1.0, beta=1.0, horizon_rounds=2),
        start, retired.append,
    )  # fmt: skip
    assert pool.observe(100) == 1  # 10 edges
    assert pool.observe(150) == 3  # trend +50/round: 250 in 2 rounds -> 25 edges -> 3
    assert pool.spares == [0, 1, 2]
    pool.promote(1)  # spare 1 took a dead edge's clients
    assert pool.observe(150) == 2  # flat now: 150 -> 15 edges -> 2
    assert pool.spares == [0, 2]  # nothing to start: 2 left after the promotion
    assert pool.observe(40) == 1  # shrinking
    assert retired == [2]
    assert started == [0, 1, 2]
