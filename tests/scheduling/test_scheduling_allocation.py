"""Allocation: finish times fit the deadline and are equal; over-selection; settlement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import ConfigError, DataError
from fedstrata.scheduling import (
    AllocationCandidates,
    DeviceProfiles,
    TimePredictor,
    WorkBounds,
    allocate_work,
    choose_partitions,
    first_arrivals,
    link_seconds,
    overselect,
    plan_round,
    settle_at_deadline,
    settlement_weights,
)


@st.composite
def populations(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float, WorkBounds]:
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    spe = np.exp(rng.uniform(np.log(1e-4), np.log(1e-1), n))  # 1000x heterogeneity
    fixed = rng.uniform(0.0, 5.0, n)
    deadline = draw(st.floats(1.0, 200.0))
    g = draw(st.sampled_from([1, 8, 32]))
    lo = draw(st.integers(1, 64))
    hi = draw(st.one_of(st.none(), st.integers(lo, 5000)))
    return spe, fixed, deadline, WorkBounds(min_work=lo, max_work=hi, granularity=g)


@settings(max_examples=150, deadline=None)
@given(populations())
def test_feasible_clients_finish_by_the_deadline_and_together(
    case: tuple[np.ndarray, np.ndarray, float, WorkBounds],
) -> None:
    spe, fixed, deadline, b = case
    plan = allocate_work(spe, fixed, deadline, b)
    ok = plan.feasible
    np.testing.assert_array_equal(ok, fixed + b.min_work * spe <= deadline)
    assert (plan.finish_s[ok] <= plan.target_s + 1e-9).all()
    assert plan.target_s <= deadline
    assert (plan.work >= b.min_work).all()
    if b.max_work is not None:
        assert (plan.work <= b.max_work).all()
    # Not held back by a bound -> within one granule of the common target.
    free = ok & (plan.work > b.min_work)
    if b.max_work is not None:
        free &= plan.work < b.max_work
    assert (plan.target_s - plan.finish_s[free] < b.granularity * spe[free] + 1e-9).all()
    off_grid = (plan.work % b.granularity != 0) & (plan.work != b.min_work)
    if b.max_work is not None:
        off_grid &= plan.work != b.max_work
    assert not off_grid.any()


def test_equalises_a_thousandfold_spread() -> None:
    spe = np.geomspace(1e-4, 1e-1, 100)
    plan = allocate_work(spe, 1.0, 60.0)
    assert plan.feasible.all()
    assert plan.finish_s.max() <= 60.0
    assert plan.finish_s.min() > 60.0 - spe.max()  # everyone finishes within one example
    assert plan.work[0] / plan.work[-1] > 900  # fast devices do ~1000x the work


def test_target_shrinks_when_every_client_hits_its_cap() -> None:
    plan = allocate_work(np.array([0.01, 0.02]), 0.0, 100.0, WorkBounds(max_work=100))
    np.testing.assert_array_equal(plan.work, [100, 100])
    assert plan.target_s == pytest.approx(2.0)


def test_per_client_caps_and_infeasible_clients() -> None:
    plan = allocate_work(
        np.array([0.001, 0.001, 10.0]),
        0.0,
        5.0,
        WorkBounds(min_work=2),
        max_work=np.array([50, 10_000, 10]),
    )
    assert plan.work[0] == 50
    assert plan.work[1] == 5000
    assert not plan.feasible[2]
    assert plan.work[2] == 2


def test_plan_round_includes_links_and_safety_margin() -> None:
    p = DeviceProfiles(np.array([4, 9]), [1.0, 0.01], 4.0, 50.0, 8.0, 80.0, 1.0)
    down, up = link_seconds(p, down_bytes=1_000_000, up_bytes=1_000_000)
    np.testing.assert_allclose(down, 0.05 + 0.1)
    np.testing.assert_allclose(up, 0.05 + 1.0)
    pred = TimePredictor.from_profiles(p, flops_per_example=1e6)
    plan = plan_round(
        pred, p, deadline_s=10.0, down_bytes=1_000_000, up_bytes=1_000_000, safety=0.1
    )
    assert (plan.finish_s <= 9.0).all()
    assert (plan.finish_s > 8.9).all()
    np.testing.assert_array_equal(plan.work, np.floor((9.0 - down - up) / (1e6 / p.flops)))


def test_allocation_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="deadline_s"):
        allocate_work(np.ones(2), 0.0, 0.0)
    with pytest.raises(ConfigError, match="safety"):
        allocate_work(np.ones(2), 0.0, 1.0, safety=1.0)
    with pytest.raises(DataError, match="seconds_per_example"):
        allocate_work(np.array([1.0, 0.0]), 0.0, 1.0)
    with pytest.raises(DataError, match="fixed_s"):
        allocate_work(np.ones(2), np.ones(3), 1.0)
    with pytest.raises(ConfigError, match="max_work"):
        WorkBounds(min_work=5, max_work=4)


def test_overselect_and_first_arrivals() -> None:
    assert overselect(10, 0.3) == 13
    assert overselect(10, 0.0) == 10
    assert overselect(3, 0.1) == 4
    mask = first_arrivals(np.array([5.0, 1.0, 3.0, 2.0, 9.0]), 3)
    np.testing.assert_array_equal(mask, [False, True, True, True, False])
    late = first_arrivals(np.array([5.0, 1.0, 3.0, np.inf]), 3, deadline_s=2.0)
    np.testing.assert_array_equal(late, [False, True, False, False])
    with pytest.raises(ConfigError, match="rate"):
        overselect(10, -0.1)


def test_settle_accepts_partial_work_and_drops_stragglers() -> None:
    assigned = np.array([100, 100, 100, 100])
    rate = np.array([50.0, 10.0, 1.0, 0.0])  # examples per second
    done, dropped = settle_at_deadline(assigned, rate, 5.0, min_fraction=0.1)
    np.testing.assert_array_equal(done, [100, 50, 0, 0])
    np.testing.assert_array_equal(dropped, [False, False, True, True])
    np.testing.assert_allclose(settlement_weights(assigned, done, dropped), [1.0, 0.5, 0, 0])
    done, dropped = settle_at_deadline(
        assigned, rate, 5.0, start_s=1.0, upload_s=1.0, granularity=8
    )
    np.testing.assert_array_equal(done, [100, 24, 0, 0])  # 3 s of work; 3 < one granule
    np.testing.assert_array_equal(dropped, [False, False, True, True])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 10_000), st.floats(0.0, 1e4)), min_size=1, max_size=40),
    st.floats(0.0, 100.0),
    st.floats(0.0, 1.0),
)
def test_settlement_laws(rows: list[tuple[int, float]], deadline: float, frac: float) -> None:
    assigned = np.array([r[0] for r in rows])
    rate = np.array([r[1] for r in rows])
    done, dropped = settle_at_deadline(assigned, rate, deadline, min_fraction=frac)
    assert ((done >= 0) & (done <= assigned)).all()
    assert (done[dropped] == 0).all()
    assert (done[~dropped] >= np.maximum(1, frac * assigned[~dropped])).all()
    on_time = rate * deadline >= assigned
    assert (done[on_time] == assigned[on_time]).all()


def test_settle_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="min_fraction"):
        settle_at_deadline(np.array([1]), np.array([1.0]), 1.0, min_fraction=2.0)
    with pytest.raises(DataError, match="assigned"):
        settle_at_deadline(np.array([0]), np.array([1.0]), 1.0)
    with pytest.raises(DataError, match="progress_rate"):
        settle_at_deadline(np.array([1, 2]), np.array([1.0]), 1.0)


def test_choose_partitions_takes_the_heaviest_fitting_partition() -> None:
    cands = AllocationCandidates(
        np.array([1, 1, 2, 3, 3, 3]),
        np.array([0, 1, 0, 0, 1, 2]),
        np.array([8.0, 2.0, 4.0, 16.0, 4.0, 1.0]),
    )
    dev, part = choose_partitions(cands)
    np.testing.assert_array_equal(dev, [1, 2, 3])
    np.testing.assert_array_equal(part, [1, 0, 2])
    empty = AllocationCandidates(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    assert choose_partitions(empty)[0].size == 0
