"""Integer and continuous noise samplers: moments, exact pmf shape, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedstrata.errors import ConfigError
from fedstrata.privacy import discrete_gaussian, discrete_laplace, gaussian, skellam

N = 200_000


def _dg_pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    wide = np.arange(-60 * math.ceil(sigma) - 60, 60 * math.ceil(sigma) + 61)
    norm = np.exp(-(wide**2) / (2 * sigma**2)).sum()
    return np.exp(-(support**2) / (2 * sigma**2)) / norm


@pytest.mark.parametrize("sigma", [0.7, 1.0, 3.0, 25.0])
def test_discrete_gaussian_mean_zero_variance_sigma2(sigma: float) -> None:
    x = discrete_gaussian(N, sigma, np.random.default_rng(0))
    assert x.dtype == np.int64
    assert x.shape == (N,)
    support = np.arange(-40 * math.ceil(sigma), 40 * math.ceil(sigma) + 1)
    true_var = float((_dg_pmf(sigma, support) * support**2).sum())
    assert true_var == pytest.approx(sigma**2, rel=0.15 if sigma < 1 else 1e-6)
    se_mean = math.sqrt(true_var / N)
    assert abs(x.mean()) < 5 * se_mean
    assert x.var() == pytest.approx(true_var, rel=0.02)


def test_discrete_gaussian_matches_exact_pmf() -> None:
    sigma = 1.5
    x = discrete_gaussian(N, sigma, np.random.default_rng(1))
    support = np.arange(-6, 7)
    expected = _dg_pmf(sigma, support)
    observed = np.array([(x == k).mean() for k in support])
    se = np.sqrt(expected * (1 - expected) / N)
    assert np.all(np.abs(observed - expected) < 5 * se + 1e-6)


def test_discrete_gaussian_shapes_zero_and_reproducible() -> None:
    assert discrete_gaussian((3, 4), 2.0, np.random.default_rng(0)).shape == (3, 4)
    assert not discrete_gaussian(5, 0.0, np.random.default_rng(0)).any()
    a = discrete_gaussian(100, 4.0, np.random.default_rng(7))
    b = discrete_gaussian(100, 4.0, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mu", [0.5, 4.0, 1000.0])
def test_skellam_mean_zero_variance_2mu(mu: float) -> None:
    x = skellam(N, mu, np.random.default_rng(2))
    assert x.dtype == np.int64
    assert abs(x.mean()) < 5 * math.sqrt(2 * mu / N)
    assert x.var() == pytest.approx(2 * mu, rel=0.02)


def test_discrete_laplace_variance() -> None:
    t = 3.0
    x = discrete_laplace(N, t, np.random.default_rng(3))
    e = math.exp(-1 / t)
    assert x.var() == pytest.approx(2 * e / (1 - e) ** 2, rel=0.03)


def test_gaussian_std() -> None:
    x = gaussian(N, 2.5, np.random.default_rng(4))
    assert x.std() == pytest.approx(2.5, rel=0.01)


@pytest.mark.parametrize(
    ("fn", "bad"),
    [(discrete_gaussian, -1.0), (skellam, math.nan), (gaussian, math.inf), (discrete_laplace, -2)],
)
def test_bad_scale_raises_config_error(fn, bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=">= 0"):
        fn(3, bad, np.random.default_rng(0))


def test_negative_shape_raises() -> None:
    with pytest.raises(ConfigError, match="shape"):
        discrete_gaussian((2, -1), 1.0, np.random.default_rng(0))
