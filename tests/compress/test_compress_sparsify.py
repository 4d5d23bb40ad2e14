"""Top-k (exact and approximate) and random-k support kernels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.compress.sparsify import (
    APPROX_TOLERANCE,
    randk_support,
    topk_approx_indices,
    topk_exact_indices,
    topk_indices,
)


def _is_topk(x: np.ndarray, idx: np.ndarray, k: int) -> bool:
    mask = np.zeros(x.shape[0], dtype=bool)
    mask[idx] = True
    kept, dropped = np.abs(x[mask]), np.abs(x[~mask])
    return (
        idx.shape[0] == k
        and np.all(np.diff(idx) > 0)
        and (dropped.size == 0 or kept.min() >= dropped.max())
    )


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300_000),
    density=st.floats(1e-4, 1.0),
    seed=st.integers(0, 2**32 - 1),
    ties=st.booleans(),
)
def test_topk_is_the_exact_topk_set(n: int, density: float, seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    if ties:
        x = np.round(x * 2).astype(np.float32)  # many equal magnitudes
    k = max(1, min(n, round(density * n)))
    assert _is_topk(x, topk_indices(x, k, rng), k)
    assert _is_topk(x, topk_exact_indices(x, k), k)


def test_topk_handles_mostly_zero_vectors() -> None:
    x = np.zeros(1_000_000, dtype=np.float32)
    x[::50_000] = 1.0
    idx = topk_indices(x, 1000, np.random.default_rng(0))
    assert _is_topk(x, idx, 1000)


@pytest.mark.parametrize("seed", range(5))
def test_topk_approx_count_within_tolerance_and_threshold_shaped(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(2_000_000) * rng.exponential(1.0, 2_000_000)).astype(np.float32)
    k = 20_000
    idx = topk_approx_indices(x, k, rng)
    assert abs(idx.shape[0] - k) <= APPROX_TOLERANCE * k
    assert _is_topk(x, idx, idx.shape[0])  # everything above the threshold, sorted


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 50_000), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**63 - 1))
def test_randk_support_is_distinct_sorted_and_deterministic(
    size: int, frac: float, seed: int
) -> None:
    k = round(frac * size)
    support = randk_support(seed, size, k)
    assert support.shape == (k,)
    assert support.dtype == np.int64
    assert np.all(np.diff(support) > 0)
    assert k == 0 or (support[0] >= 0 and support[-1] < size)
    np.testing.assert_array_equal(support, randk_support(seed, size, k))


def test_randk_support_is_uniform() -> None:
    hits = np.zeros(100, dtype=np.int64)
    for seed in range(2000):
        hits[randk_support(seed, 100, 10)] += 1
    # each coordinate is kept with probability 0.1: 200 expected, sd ~13.4
    assert np.all(np.abs(hits - 200) < 6 * 13.4)


def test_randk_support_differs_by_seed_and_rejects_bad_k() -> None:
    assert not np.array_equal(randk_support(1, 10_000, 100), randk_support(2, 10_000, 100))
    with pytest.raises(ValueError, match="k="):
        randk_support(1, 10, 11)
