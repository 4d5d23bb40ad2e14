"""Robust aggregators: outlier resistance, Krum's selection, kernels against references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedstrata.aggregation import (
    CoordinateMedian,
    Krum,
    TrimmedMean,
    VectorListState,
    coordinate_median,
    krum_scores,
    pairwise_sq_distances,
    trimmed_mean,
)
from fedstrata.errors import AggregationError, ConfigError

HUGE = np.float32(1e30)


def state_of(vecs: np.ndarray, ids: list[int] | None = None) -> VectorListState:
    state = VectorListState(vecs.shape[1])
    agg = CoordinateMedian()
    for i, vec in enumerate(vecs):
        agg.accumulate(state, vec, 1.0, client_id=i if ids is None else ids[i])
    return state


honest_matrices = st.integers(3, 9).flatmap(
    lambda n: hnp.arrays(np.float32, (n, 4), elements=st.floats(-10, 10, width=32))
)


@settings(max_examples=50, deadline=None)
@given(honest_matrices, st.integers(0, 3), st.sampled_from([HUGE, -HUGE]))
def test_median_ignores_one_huge_outlier(honest: np.ndarray, col: int, sign: float) -> None:
    outlier = np.zeros((1, 4), np.float32)
    outlier[0, col] = sign
    result = CoordinateMedian().finalize(state_of(np.vstack([honest, outlier])))
    assert np.all(result >= honest.min(axis=0))
    assert np.all(result <= honest.max(axis=0))


@settings(max_examples=50, deadline=None)
@given(honest_matrices, st.sampled_from([HUGE, -HUGE]))
def test_trimmed_mean_ignores_one_huge_outlier(honest: np.ndarray, sign: float) -> None:
    vecs = np.vstack([honest, np.full((1, 4), sign, np.float32)])
    beta = 1.0 / vecs.shape[0] + 1e-9  # trims exactly one value from each end
    result = TrimmedMean(beta=beta).finalize(state_of(vecs))
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    assert np.all(result >= lo - 1e-5)
    assert np.all(result <= hi + 1e-5)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 10).flatmap(
        lambda n: hnp.arrays(np.float32, (n, 5), elements=st.floats(-1e3, 1e3, width=32))
    ),
    st.integers(0, 4),
)
def test_trimmed_mean_matches_sorting_reference(matrix: np.ndarray, trim: int) -> None:
    n = matrix.shape[0]
    if 2 * trim >= n:
        with pytest.raises(AggregationError, match="nothing is left"):
            trimmed_mean(matrix, trim)
        return
    expected = np.sort(matrix, axis=0)[trim : n - trim].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(trimmed_mean(matrix, trim), expected, rtol=1e-6, atol=1e-6)


def test_median_matches_numpy_for_even_and_odd_counts() -> None:
    rng = np.random.default_rng(0)
    for n in (4, 5):
        matrix = rng.normal(size=(n, 7)).astype(np.float32)
        np.testing.assert_allclose(coordinate_median(matrix), np.median(matrix, axis=0))


def test_trimmed_mean_with_beta_zero_is_the_plain_mean() -> None:
    matrix = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    out = TrimmedMean(beta=0.0).finalize(state_of(matrix))
    np.testing.assert_allclose(out, matrix.astype(np.float64).mean(axis=0), rtol=1e-6)


def test_trimmed_mean_always_keeps_something_since_beta_is_below_half() -> None:
    # floor(beta * n) < n / 2, so with 3 updates beta=0.49 trims one each end: the median.
    vecs = np.array([[1.0, 5.0], [2.0, -7.0], [30.0, 0.0]], np.float32)
    out = TrimmedMean(beta=0.49).finalize(state_of(vecs))
    np.testing.assert_array_equal(out, np.median(vecs, axis=0))


@settings(max_examples=30, deadline=None)
@given(
    st.integers(2, 8).flatmap(
        lambda n: hnp.arrays(np.float32, (n, 6), elements=st.floats(-100, 100, width=32))
    )
)
def test_gram_distances_match_direct_computation(matrix: np.ndarray) -> None:
    x = matrix.astype(np.float64)
    direct = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
    got = pairwise_sq_distances(matrix)
    np.testing.assert_allclose(got, direct, rtol=1e-9, atol=1e-7 * (1 + direct.max()))
    assert np.all(got >= 0)


def test_gram_distances_stay_accurate_for_nearby_points_far_from_origin() -> None:
    # Without centring, |x|^2 ~ 1e10 would swamp distances of ~1e-4.
    base = np.full((1, 100), 1e4, np.float32)
    offsets = np.random.default_rng(2).normal(scale=1e-3, size=(4, 100)).astype(np.float32)
    matrix = base + offsets
    x = matrix.astype(np.float64)
    direct = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(pairwise_sq_distances(matrix), direct, rtol=1e-6, atol=1e-12)


def test_krum_scores_match_brute_force() -> None:
    matrix = np.random.default_rng(3).normal(size=(7, 5)).astype(np.float32)
    f = 2
    x = matrix.astype(np.float64)
    expected = []
    for i in range(7):
        d = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in range(7) if j != i)
        expected.append(sum(d[: 7 - f - 2]))
    np.testing.assert_allclose(krum_scores(matrix, f), expected, rtol=1e-9)


def honest_and_byzantine(seed: int, n_honest: int, n_byz: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    honest = (1.0 + 0.1 * rng.normal(size=(n_honest, 20))).astype(np.float32)
    byz = np.full((n_byz, 20), -50.0, np.float32)  # a colluding cluster far away
    return np.vstack([honest, byz])


@pytest.mark.parametrize("seed", range(5))
def test_krum_picks_from_the_honest_cluster(seed: int) -> None:
    vecs = honest_and_byzantine(seed, n_honest=7, n_byz=2)
    perm = np.random.default_rng(seed).permutation(9)
    state = state_of(vecs[perm], ids=[int(i) for i in perm])
    krum = Krum(num_byzantine=2)
    chosen = [state.client_ids[i] for i in krum.select(state)]
    assert chosen[0] < 7
    out = krum.finalize(state)
    assert np.all(np.abs(out - 1.0) < 0.5)


def test_multi_krum_averages_the_m_best() -> None:
    vecs = honest_and_byzantine(0, n_honest=7, n_byz=2)
    state = state_of(vecs)
    krum = Krum(num_byzantine=2, multi_m=5)
    chosen = krum.select(state)
    assert len(chosen) == 5
    assert all(i < 7 for i in chosen)
    np.testing.assert_allclose(
        krum.finalize(state), vecs[chosen].astype(np.float64).mean(axis=0), rtol=1e-6
    )


def test_krum_breaks_ties_by_client_id() -> None:
    vecs = np.zeros((5, 3), np.float32)
    state = state_of(vecs, ids=[9, 4, 7, 1, 3])
    assert Krum(num_byzantine=1, multi_m=2).select(state) == [3, 4]  # ids 1 and 3


def test_krum_needs_enough_updates() -> None:
    with pytest.raises(AggregationError, match=r"at least 7 updates \(n > 2f \+ 2\), got 6"):
        Krum(num_byzantine=2).finalize(state_of(np.ones((6, 2), np.float32)))
    with pytest.raises(AggregationError, match="multi_m <= n - f"):
        Krum(num_byzantine=1, multi_m=5).finalize(state_of(np.ones((5, 2), np.float32)))
    with pytest.raises(AggregationError, match="no updates"):
        Krum().finalize(VectorListState(2))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TrimmedMean(beta=0.5), r"TrimmedMean.beta must be in \[0, 0.5\), got 0.5"),
        (lambda: TrimmedMean(beta=-0.1), "TrimmedMean.beta"),
        (lambda: Krum(num_byzantine=-1), "Krum.num_byzantine must be >= 0, got -1"),
        (lambda: Krum(multi_m=0), "Krum.multi_m must be >= 1, got 0"),
    ],
)
def test_hyperparameters_are_validated(make: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()  # type: ignore[operator]


@pytest.mark.parametrize("agg", [CoordinateMedian(), TrimmedMean(), Krum()])
def test_robust_aggregators_refuse_inner_tiers(agg: CoordinateMedian | TrimmedMean | Krum) -> None:
    assert agg.mergeable is False
    with pytest.raises(AggregationError, match=type(agg).__name__):
        agg.merge(agg.init(2), agg.init(2))


def test_kernels_leave_their_input_alone_unless_told() -> None:
    matrix = np.random.default_rng(4).normal(size=(6, 5)).astype(np.float32)
    original = matrix.copy()
    median = coordinate_median(matrix)
    trimmed = trimmed_mean(matrix, 1)
    pairwise_sq_distances(matrix)
    krum_scores(matrix, 1)
    assert np.array_equal(matrix, original)
    np.testing.assert_array_equal(coordinate_median(matrix.copy(), overwrite_input=True), median)
    np.testing.assert_array_equal(trimmed_mean(matrix, 1, overwrite_input=True), trimmed)
