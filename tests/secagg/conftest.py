"""Factories shared by the secure-aggregation tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


def _make_inputs(n: int, m: int, seed: int, bits: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 1 << bits, m, dtype=np.uint32) for _ in range(n)]


def _plain_sum(inputs: list[np.ndarray], excluded: set[int] | frozenset[int]) -> np.ndarray:
    out = np.zeros_like(inputs[0])
    for i, x in enumerate(inputs):
        if i not in excluded:
            out += x
    return out


@pytest.fixture
def make_inputs() -> Callable[..., list[np.ndarray]]:
    """``make_inputs(n, m, seed, bits=16)`` -> n random uint32 vectors of length m."""
    return _make_inputs


@pytest.fixture
def plain_sum() -> Callable[..., np.ndarray]:
    """``plain_sum(inputs, excluded)`` -> the wraparound sum of the included inputs."""
    return _plain_sum
