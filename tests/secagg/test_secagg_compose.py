"""Composition: quantization with a cohort-shared random-k support, and integer DP noise."""

from __future__ import annotations

import numpy as np
import pytest

from fedstrata.errors import ConfigError, ShapeError
from fedstrata.secagg import SecAggConfig, add_noise, from_ring, simulate_round, to_ring


def test_quantized_random_k_with_integer_noise_sums_exactly() -> None:
    n, dim, k, bits = 12, 1000, 100, 12
    rng = np.random.default_rng(0)
    support = np.random.default_rng(1234).choice(dim, k, replace=False)  # cohort-shared seed
    updates = rng.normal(0, 1, (n, dim)).astype(np.float32)
    scale = (1 << (bits - 1)) / 8.0
    quantized = np.clip(
        np.rint(updates[:, support] * scale), -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    ).astype(np.int64)
    noise = rng.integers(-50, 51, (n, k))  # stands in for fedstrata.privacy's integer noise
    inputs = [add_noise(to_ring(q), z) for q, z in zip(quantized, noise, strict=True)]
    config = SecAggConfig(
        num_clients=n, vector_length=k, threshold=4, degree=6, input_bits=bits + 2
    )
    total = from_ring(simulate_round(inputs, set(), config, rng))
    np.testing.assert_array_equal(total, quantized.sum(axis=0) + noise.sum(axis=0))
    dense = np.zeros(dim)
    dense[support] = total / scale
    assert np.abs(dense[support] / n - updates[:, support].mean(axis=0)).max() < 0.2


def test_ring_round_trip_for_signed_values() -> None:
    values = np.array([-5, 0, 7, -(1 << 19), (1 << 19) - 1])
    np.testing.assert_array_equal(from_ring(to_ring(values, 20), 20), values)


def test_ring_helpers_reject_bad_input() -> None:
    with pytest.raises(ShapeError):
        add_noise(np.zeros(3, np.uint32), np.zeros(4, np.int64))
    with pytest.raises(ConfigError, match="integer"):
        to_ring(np.zeros(3, np.float32))
    with pytest.raises(ConfigError, match="modulus_bits"):
        from_ring(np.zeros(3, np.uint32), 40)
