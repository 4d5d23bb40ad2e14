"""Partition functions: exactness (W1), partition laws, and argument validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.data import (
    dirichlet_label_skew,
    iid,
    label_shards,
    load_digits_split,
    quantity_skew,
)
from fedstrata.errors import ConfigError, DataError


def _labels(n: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def _assert_partition(parts: list[np.ndarray], n: int, num_clients: int) -> None:
    assert len(parts) == num_clients
    assert all(p.dtype == np.intp for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def test_label_shards_reproduces_w1_exactly() -> None:
    labels = load_digits_split()[0].y
    parts = label_shards(labels, 100, 2, np.random.default_rng(0))
    shards = np.array_split(np.argsort(labels, kind="stable"), 200)
    perm = np.random.default_rng(0).permutation(200)
    assert len(parts) == 100
    for c in range(100):
        expected = np.concatenate([shards[perm[2 * c]], shards[perm[2 * c + 1]]])
        np.testing.assert_array_equal(parts[c], expected)
    assert sum(len(p) for p in parts) == 1437
    # Mostly one or two labels per client, as the shard scheme intends.
    assert max(len(np.unique(labels[p])) for p in parts) <= 4


settings_fast = settings(max_examples=25, deadline=None)


@settings_fast
@given(n=st.integers(1, 300), clients=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_iid_is_a_balanced_partition(n: int, clients: int, seed: int) -> None:
    clients = min(clients, n)
    parts = iid(n, clients, np.random.default_rng(seed))
    _assert_partition(parts, n, clients)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@settings_fast
@given(
    n=st.integers(10, 400),
    clients=st.integers(1, 30),
    classes=st.integers(1, 12),
    alpha=st.floats(0.01, 100.0),
    min_size=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_is_a_partition_respecting_min_size(
    *, n: int, clients: int, classes: int, alpha: float, min_size: int, seed: int
) -> None:
    clients = min(clients, n // min_size)
    labels = _labels(n, classes, seed)
    parts = dirichlet_label_skew(labels, clients, alpha, np.random.default_rng(seed), min_size)
    _assert_partition(parts, n, clients)
    assert min(len(p) for p in parts) >= min_size


@settings_fast
@given(
    n=st.integers(4, 300),
    clients=st.integers(1, 30),
    spc=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_label_shards_is_a_partition(n: int, clients: int, spc: int, seed: int) -> None:
    clients = max(1, min(clients, n // spc))
    labels = _labels(n, 5, seed)
    parts = label_shards(labels, clients, spc, np.random.default_rng(seed))
    _assert_partition(parts, n, clients)
    shard_min = n // (clients * spc)
    assert min(len(p) for p in parts) >= spc * shard_min


@settings_fast
@given(
    n=st.integers(1, 500),
    clients=st.integers(1, 50),
    sigma=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantity_skew_is_a_partition(n: int, clients: int, sigma: float, seed: int) -> None:
    clients = min(clients, n)
    parts = quantity_skew(n, clients, sigma, np.random.default_rng(seed))
    _assert_partition(parts, n, clients)
    assert min(len(p) for p in parts) >= 1


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: iid(100, 7, rng),
        lambda rng: dirichlet_label_skew(_labels(100, 4, 1), 7, 0.3, rng),
        lambda rng: label_shards(_labels(100, 4, 1), 7, 2, rng),
        lambda rng: quantity_skew(100, 7, 1.0, rng),
    ],
)
def test_same_generator_state_gives_same_partition(make) -> None:
    a = make(np.random.default_rng(5))
    b = make(np.random.default_rng(5))
    c = make(np.random.default_rng(6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def _mean_labels_per_client(alpha: float) -> float:
    labels = _labels(5000, 10, 0)
    parts = dirichlet_label_skew(labels, 50, alpha, np.random.default_rng(0))
    return float(np.mean([len(np.unique(labels[p])) for p in parts]))


def test_dirichlet_small_alpha_skews_labels() -> None:
    assert _mean_labels_per_client(0.05) < 4
    assert _mean_labels_per_client(100.0) > 9.5


def test_dirichlet_tops_up_many_tiny_clients() -> None:
    labels = _labels(20_000, 10, 3)
    parts = dirichlet_label_skew(labels, 10_000, 0.05, np.random.default_rng(0), min_size=2)
    _assert_partition(parts, 20_000, 10_000)
    assert min(len(p) for p in parts) == 2


def test_quantity_skew_sigma_spreads_sizes() -> None:
    def spread(sigma: float) -> float:
        sizes = [len(p) for p in quantity_skew(10_000, 100, sigma, np.random.default_rng(0))]
        return float(np.std(sizes))

    assert spread(0.0) <= 1.0 < spread(0.5) < spread(2.0)


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        (lambda: iid(10, 0, np.random.default_rng()), ConfigError, "num_clients"),
        (lambda: iid(10, 11, np.random.default_rng()), ConfigError, "num_clients=11"),
        (lambda: iid(0, 1, np.random.default_rng()), ConfigError, "n must"),
        (lambda: iid(10, 2.5, np.random.default_rng()), ConfigError, "num_clients"),
        (
            lambda: dirichlet_label_skew(np.zeros(10, int), 2, 0.0, np.random.default_rng()),
            ConfigError,
            "alpha",
        ),
        (
            lambda: dirichlet_label_skew(np.zeros(10, int), 2, 1.0, np.random.default_rng(), 0),
            ConfigError,
            "min_size",
        ),
        (
            lambda: dirichlet_label_skew(np.zeros(10, int), 4, 1.0, np.random.default_rng(), 3),
            ConfigError,
            "num_clients=4",
        ),
        (
            lambda: dirichlet_label_skew(np.zeros(10), 2, 1.0, np.random.default_rng()),
            DataError,
            "integer",
        ),
        (
            lambda: label_shards(np.array([0, -1, 2]), 1, 1, np.random.default_rng()),
            DataError,
            ">= 0",
        ),
        (
            lambda: label_shards(np.zeros((2, 2), int), 1, 1, np.random.default_rng()),
            DataError,
            "1-D",
        ),
        (
            lambda: label_shards(np.zeros(10, int), 2, 0, np.random.default_rng()),
            ConfigError,
            "shards_per_client",
        ),
        (
            lambda: label_shards(np.zeros(10, int), 6, 2, np.random.default_rng()),
            ConfigError,
            "num_clients=6",
        ),
        (lambda: quantity_skew(10, 2, -1.0, np.random.default_rng()), ConfigError, "sigma"),
        (lambda: quantity_skew(10, 2, 1.0, np.random.default_rng(), 0), ConfigError, "min_size"),
    ],
)
def test_invalid_arguments_raise_named_errors(call, error, needle) -> None:
    with pytest.raises(error, match=needle):
        call()
