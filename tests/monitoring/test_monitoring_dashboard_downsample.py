"""Server-side downsampling of the dashboard: LTTB for lines, binned means for the heat map."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import DataError
from fedstrata.monitoring.dashboard import bin_mean, lttb
from fedstrata.monitoring.dashboard._downsample import bin_edges

finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(ys=st.lists(finite, min_size=2, max_size=400), n_out=st.integers(2, 120))
def test_lttb_keeps_the_ends_and_at_most_n_points_in_order(ys, n_out) -> None:
    y = np.asarray(ys)
    x = np.arange(len(y), dtype=np.float64)
    idx = lttb(x, y, n_out)
    assert len(idx) == min(len(y), n_out)
    assert idx[0] == 0
    assert idx[-1] == len(y) - 1
    assert np.all(np.diff(idx) > 0)


def test_lttb_keeps_a_spike_that_a_stride_would_miss() -> None:
    x = np.arange(1000, dtype=np.float64)
    y = np.zeros(1000)
    y[503] = 50.0
    idx = lttb(x, y, 50)
    assert 503 in idx
    assert 503 not in np.arange(0, 1000, 1000 // 50)


def test_lttb_returns_every_point_when_few() -> None:
    x = np.arange(5, dtype=np.float64)
    assert lttb(x, x, 10).tolist() == [0, 1, 2, 3, 4]


def test_lttb_refuses_bad_input() -> None:
    with pytest.raises(DataError, match="one length"):
        lttb(np.arange(3.0), np.arange(4.0), 2)
    with pytest.raises(DataError, match="n_out"):
        lttb(np.arange(3.0), np.arange(3.0), 1)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    bins=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    seed=st.integers(0, 1000),
)
def test_bin_mean_matches_a_blockwise_nanmean(shape, bins, seed) -> None:
    rng = np.random.default_rng(seed)
    grid = rng.random(shape)
    grid[rng.random(shape) < 0.3] = np.nan
    out = bin_mean(grid, *bins)
    r_edges = [*bin_edges(shape[0], bins[0]).tolist(), shape[0]]
    c_edges = [*bin_edges(shape[1], bins[1]).tolist(), shape[1]]
    assert out.shape == (len(r_edges) - 1, len(c_edges) - 1)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = grid[r_edges[i] : r_edges[i + 1], c_edges[j] : c_edges[j + 1]]
            if np.isfinite(block).any():
                assert out[i, j] == pytest.approx(np.nanmean(block))
            else:
                assert np.isnan(out[i, j])


def test_bin_edges_cover_the_range_without_empty_bins() -> None:
    edges = bin_edges(10_000, 50)
    assert len(edges) == 50
    assert edges[0] == 0
    assert np.all(np.diff(edges) == 200)
    assert bin_edges(3, 50).tolist() == [0, 1, 2]


def test_bin_mean_refuses_an_empty_grid() -> None:
    with pytest.raises(DataError, match="non-empty"):
        bin_mean(np.empty((0, 3)), 2, 2)
