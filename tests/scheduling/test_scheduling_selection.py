"""Selection: uniform baseline; Oort prefers fast high-loss clients but still explores."""

from __future__ import annotations

import numpy as np
import pytest

from fedstrata.errors import ConfigError, DataError
from fedstrata.scheduling import OortConfig, OortSelector, RandomSelector
from fedstrata.scheduling.selection import oort_scores

N = 100


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_random_selector_is_seeded_distinct_and_sorted() -> None:
    sel, avail = RandomSelector(), np.arange(10, 60)
    a = sel.select(0, avail, 8, rng(3))
    np.testing.assert_array_equal(a, sel.select(0, avail, 8, rng(3)))
    assert a.size == 8
    assert np.unique(a).size == 8
    assert (np.diff(a) > 0).all()
    assert set(a.tolist()) <= set(avail.tolist())
    np.testing.assert_array_equal(sel.select(0, avail[:5], 8, rng(0)), avail[:5])
    with pytest.raises(DataError, match="distinct"):
        sel.select(0, np.array([1, 1]), 1, rng())


def explored_population(config: OortConfig) -> OortSelector:
    """Everyone explored: loss grows with the id, duration grows with id % 10."""
    sel = OortSelector(N, config)
    ids = np.arange(N)
    loss = 0.1 + ids / N
    duration = 10.0 * (1 + ids % 10)  # ids ending in 0 are the fastest
    sel.feedback(0, ids, num_samples=np.full(N, 100), mean_sq_loss=loss**2, duration_s=duration)
    return sel


def test_oort_prefers_fast_high_loss_clients() -> None:
    cfg = OortConfig(epsilon=0.0, epsilon_min=0.0, preferred_duration_s=20.0, alpha=2.0)
    sel = explored_population(cfg)
    picked = np.concatenate([sel.select(1, np.arange(N), 10, rng(s)) for s in range(20)])
    fast_high = (picked % 10 <= 1) & (picked >= 50)  # within T and in the top half by loss
    assert fast_high.mean() > 0.8
    uniform = np.concatenate(
        [RandomSelector().select(1, np.arange(N), 10, rng(s)) for s in range(20)]
    )
    assert ((uniform % 10 <= 1) & (uniform >= 50)).mean() < 0.25


def test_speed_penalty_and_staleness_bonus() -> None:
    sel = explored_population(OortConfig(preferred_duration_s=20.0, alpha=2.0))
    fast, slow = oort_scores(sel.state, np.array([90, 95]), 5, alpha=2.0)  # 10 s vs 60 s
    assert fast > 5 * slow  # 95 is penalised by (20 / 60) ** 2
    (before,) = oort_scores(sel.state, np.array([80]), 5, alpha=0.0)
    (later,) = oort_scores(sel.state, np.array([80]), 50, alpha=0.0)
    assert later > before  # unseen for longer -> larger bonus
    sel.state.last_round[80] = 4
    (recent,) = oort_scores(sel.state, np.array([80]), 5, alpha=0.0)
    assert recent < before


def test_oort_explores_and_prefers_fast_unexplored_clients() -> None:
    sel = OortSelector(N, OortConfig(epsilon=0.5, epsilon_decay=1.0, epsilon_min=0.5))
    seen = np.arange(50)
    sel.feedback(
        0, seen, num_samples=np.full(50, 10), mean_sq_loss=np.ones(50), duration_s=np.full(50, 5.0)
    )
    hints = np.where(np.arange(N) < 75, 1.0, 100.0)  # 50..74 fast, 75..99 slow
    sel.hint_durations(np.arange(N), hints)
    picked = sel.select(1, np.arange(N), 20, rng(1))
    new = picked[picked >= 50]
    assert new.size == 10  # epsilon * k explored
    counts = np.zeros(N)
    for s in range(30):
        chosen = sel.select(2 + s, np.arange(N), 20, rng(s))
        counts[chosen] += 1
    assert counts[50:75].sum() > 5 * counts[75:].sum()


def test_epsilon_decays_to_its_floor_and_pacer_relaxes_t() -> None:
    cfg = OortConfig(
        epsilon=0.8, epsilon_decay=0.5, epsilon_min=0.1, pacer_step_s=5.0, pacer_window=2
    )
    sel = OortSelector(20, cfg)
    ids = np.arange(20)
    for r in range(6):
        sel.select(r, ids, 5, rng(r))
        # total utility shrinks every round -> the pacer should relax T
        sel.feedback(
            r,
            ids,
            num_samples=np.full(20, 10),
            mean_sq_loss=np.full(20, 1.0 / (r + 1)),
            duration_s=np.linspace(1, 20, 20),
        )
    assert sel.state.epsilon == pytest.approx(0.1)
    t_before = sel.state.preferred_s
    assert np.isfinite(t_before)  # set from the observed durations' median
    sel.select(6, ids, 5, rng(6))
    assert sel.state.preferred_s == pytest.approx(t_before + 5.0)


def test_dropped_clients_keep_utility_but_update_duration() -> None:
    sel = explored_population(OortConfig())
    before = sel.state.stat_utility[3]
    sel.feedback(
        1,
        np.array([3]),
        num_samples=np.array([0]),
        mean_sq_loss=np.array([np.nan]),
        duration_s=np.array([999.0]),
    )
    assert sel.state.stat_utility[3] == before
    assert sel.state.duration_s[3] == 999.0
    assert sel.state.last_round[3] == 1


def test_oort_validates_input() -> None:
    with pytest.raises(ConfigError, match="epsilon_min"):
        OortConfig(epsilon=0.1, epsilon_min=0.2)
    with pytest.raises(ConfigError, match="num_clients"):
        OortSelector(0)
    sel = OortSelector(5)
    with pytest.raises(DataError, match=r"\[0, 5\)"):
        sel.select(0, np.array([1, 7]), 1, rng())
    with pytest.raises(DataError, match="same length"):
        sel.feedback(
            0,
            np.array([1]),
            num_samples=np.array([1, 2]),
            mean_sq_loss=np.array([1.0]),
            duration_s=np.array([1.0]),
        )
    with pytest.raises(ConfigError, match="k must be"):
        sel.select(0, np.arange(5), -1, rng())
