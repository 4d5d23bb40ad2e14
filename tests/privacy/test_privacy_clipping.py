"""Fixed and adaptive L2 clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedstrata.core.context import RoundContext
from fedstrata.errors import ConfigError
from fedstrata.pipeline import DenseCodec, Pipeline
from fedstrata.privacy import (
    AdaptiveClip,
    AdaptiveClipState,
    FixedClip,
    adaptive_clip_step,
    clip_l2,
    update_noise_multiplier,
)

CTX = RoundContext(round_idx=0, root_seed=1).for_client(3)
finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
vectors = arrays(np.float32, st.integers(1, 300), elements=finite)


def _norm64(v: np.ndarray) -> float:
    return float(np.linalg.norm(v.astype(np.float64)))


@settings(max_examples=200, deadline=None)
@given(vector=vectors, clip_norm=st.floats(1e-3, 1e3))
def test_clip_bounds_norm_and_keeps_direction(vector: np.ndarray, clip_norm: float) -> None:
    original = vector.copy()
    out = clip_l2(vector, clip_norm)
    assert out is vector
    assert _norm64(out) <= clip_norm * (1 + 1e-6)
    norm = _norm64(original)
    if norm > clip_norm:
        # Same direction, scaled to the ball's surface.
        np.testing.assert_allclose(out, original * (clip_norm / norm), rtol=1e-4, atol=1e-6)
        assert _norm64(out) == pytest.approx(clip_norm, rel=1e-5)


@settings(max_examples=100, deadline=None)
@given(vector=vectors, slack=st.floats(1.0, 10.0))
def test_clip_leaves_small_vectors_untouched(vector: np.ndarray, slack: float) -> None:
    norm = _norm64(vector)
    original = vector.copy()
    clip_l2(vector, max(norm * slack, 1e-3) * (1 + 1e-6))
    np.testing.assert_array_equal(vector, original)


def test_fixed_clip_stage_in_pipeline() -> None:
    clip = FixedClip(1.0)
    pipe = Pipeline([clip], DenseCodec(4))
    vec = np.array([3.0, 4.0, 0.0, 0.0], dtype=np.float32)
    decoded = pipe.codec.decode(pipe.encode(vec, CTX))
    assert _norm64(decoded) == pytest.approx(1.0, rel=1e-6)
    assert clip.name == "clip"
    assert clip.requires_before == frozenset()


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_bad_clip_norm(bad: float) -> None:
    with pytest.raises(ConfigError, match="clip_norm"):
        FixedClip(bad)


def _vectors_with_norms(norms: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    directions = rng.standard_normal((norms.size, 8)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return [d * np.float32(n) for d, n in zip(directions, norms, strict=True)]


@pytest.mark.parametrize(("start", "quantile"), [(0.05, 0.5), (80.0, 0.5), (1.0, 0.9)])
def test_adaptive_clip_moves_to_target_quantile(start: float, quantile: float) -> None:
    rng = np.random.default_rng(0)
    clip = AdaptiveClip(start, target_quantile=quantile, lr=0.2, count_noise_std=1.0)
    cohort = 100
    for r in range(250):
        updates = _vectors_with_norms(rng.lognormal(math.log(2.0), 0.5, cohort), rng)
        bits = sum(clip.clip_bit(u) for u in updates)
        clipped = [clip.encode(u, CTX) for u in updates]
        assert max(_norm64(c) for c in clipped) <= clip.clip_norm * (1 + 1e-6)
        clip.update(clip.noisy_bit_fraction(bits, cohort, RoundContext(r, 9).rng("clip_bits")))
    true_quantile = 2.0 * math.exp(0.5 * {0.5: 0.0, 0.9: 1.2816}[quantile])
    assert clip.clip_norm == pytest.approx(true_quantile, rel=0.15)
    assert clip.state.rounds_updated == 250


def test_adaptive_clip_step_direction() -> None:
    assert adaptive_clip_step(1.0, 0.9, 0.5, 0.2) < 1.0  # most clients unclipped -> shrink
    assert adaptive_clip_step(1.0, 0.1, 0.5, 0.2) > 1.0
    assert adaptive_clip_step(1.0, 0.5, 0.5, 0.2) == 1.0


def test_adaptive_clip_state_round_trip_and_validation() -> None:
    clip = AdaptiveClip(1.0)
    clip.update(0.0)
    other = AdaptiveClip(5.0)
    other.load_state(clip.state)
    assert other.clip_norm == clip.clip_norm
    with pytest.raises(ConfigError, match="target_quantile"):
        AdaptiveClip(1.0, target_quantile=1.0)
    with pytest.raises(ConfigError, match="clip_norm"):
        AdaptiveClipState(-1.0)
    with pytest.raises(ConfigError, match="bit_sum"):
        clip.noisy_bit_fraction(5, 3, np.random.default_rng(0))


def test_update_noise_multiplier_composes_back() -> None:
    z, sigma_b = 1.0, 5.0
    z_delta = update_noise_multiplier(z, sigma_b)
    assert z_delta > z
    assert (z_delta**-2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(z)
    with pytest.raises(ConfigError, match="count_noise_std"):
        update_noise_multiplier(1.0, 0.4)
