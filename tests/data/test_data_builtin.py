"""Built-in datasets: digits (W1), Synthetic(alpha, beta), make_federated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fedstrata.data import (
    label_shards,
    load_digits_split,
    make_federated,
    synthetic,
)
from fedstrata.errors import ConfigError


def test_digits_split_is_exactly_the_w1_recipe() -> None:
    train, test = load_digits_split()
    bunch = load_digits()
    x = (bunch.data / 16).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, bunch.target, test_size=0.2, stratify=bunch.target, random_state=0
    )
    assert (len(train), len(test)) == (1437, 360)
    assert train.x.dtype == np.float32
    assert train.y.dtype == np.int64
    np.testing.assert_array_equal(train.x, x_tr)
    np.testing.assert_array_equal(test.y, y_te)
    np.testing.assert_array_equal(train.y, y_tr)
    np.testing.assert_array_equal(test.x, x_te)
    assert train.x.min() >= 0.0
    assert train.x.max() <= 1.0


def test_digits_split_rejects_bad_fraction() -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits_split(test_fraction=1.0)


def test_make_federated_digits_shards_reproduces_w1() -> None:
    fd = make_federated("digits", "shards", 100, 0)
    train, test = load_digits_split()
    parts = label_shards(train.y, 100, 2, np.random.default_rng(0))
    assert fd.num_clients == 100
    assert fd.num_classes == 10
    assert fd.input_shape == (64,)
    for c in range(100):
        np.testing.assert_array_equal(fd.client_indices(c), parts[c])
    np.testing.assert_array_equal(fd.client(7).x, train.x[parts[7]])
    np.testing.assert_array_equal(fd.test.y, test.y)


@pytest.mark.parametrize("partition", ["iid", "dirichlet", "shards", "quantity"])
def test_make_federated_digits_every_partition(partition: str) -> None:
    fd = make_federated("digits", partition, 40, 3)  # type: ignore[arg-type]
    assert fd.num_clients == 40
    assert fd.client_sizes().sum() == 1437
    assert fd.client_sizes().min() >= 1
    again = make_federated("digits", partition, 40, 3)  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.index, fd.index)


def test_make_federated_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError, match="name"):
        make_federated("cifar", "iid", 10, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="partition"):
        make_federated("digits", "zipf", 10, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="path"):
        make_federated("npz", "iid", 10, 0)


def test_make_federated_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        np.savez(tmp_path / f"client_{i}.npz", x=rng.random((5, 2)), y=np.arange(5) % 3)
    fd = make_federated("npz", "iid", 99, 0, path=tmp_path)
    assert fd.num_clients == 3
    assert fd.num_classes == 3


def test_synthetic_shapes_and_holdout() -> None:
    fd = synthetic(1.0, 1.0, 20, np.random.default_rng(0), max_samples=400)
    assert fd.num_clients == 20
    assert fd.input_shape == (60,)
    assert fd.num_classes == 10
    assert fd.train.x.dtype == np.float32
    assert fd.train.y.dtype == np.int64
    n = len(fd.train)
    assert fd.client_sizes().sum() + len(fd.test) == n
    assert 0.15 * n < len(fd.test) < 0.2 * n + 1
    assert fd.client_sizes().min() >= int(0.8 * 50)
    assert len(np.unique(fd.train.y)) > 1


def test_synthetic_is_deterministic_per_generator_state() -> None:
    a = synthetic(0.5, 0.5, 5, np.random.default_rng(1), dim=10, num_classes=3)
    b = synthetic(0.5, 0.5, 5, np.random.default_rng(1), dim=10, num_classes=3)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.index, b.index)
    assert a.name == "synthetic(0.5,0.5)"


def _client_mean_spread(beta: float) -> float:
    fd = synthetic(0.0, beta, 40, np.random.default_rng(0), max_samples=200)
    means = np.stack([fd.client(i).x.mean(axis=0) for i in range(fd.num_clients)])
    return float(means.std(axis=0).mean())


def test_synthetic_beta_controls_feature_heterogeneity() -> None:
    assert _client_mean_spread(0.0) < _client_mean_spread(5.0)


def test_synthetic_feature_variance_decays_as_j_pow_minus_1_2() -> None:
    fd = synthetic(0.0, 0.0, 3, np.random.default_rng(0), min_samples=4000, size_log_sigma=0.0)
    x = fd.client(0).x
    var = x.var(axis=0)
    expected = np.arange(1, 61) ** -1.2
    np.testing.assert_allclose(var, expected, rtol=0.15)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"alpha": -1.0}, "alpha"),
        ({"beta": -0.1}, "beta"),
        ({"num_clients": 0}, "num_clients"),
        ({"num_classes": 1}, "num_classes"),
        ({"dim": 0}, "dim"),
    ],
)
def test_synthetic_validates(kwargs: dict[str, float], needle: str) -> None:
    args: dict[str, object] = {"alpha": 1.0, "beta": 1.0, "num_clients": 2}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=needle):
        synthetic(rng=np.random.default_rng(0), **args)  # type: ignore[arg-type]
