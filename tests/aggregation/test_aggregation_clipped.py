"""Issue 12 part 4: the server clips every decoded update to clip_norm (central DP + codecs)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.aggregation import CoordinateMedian, WeightedMean
from fedstrata.aggregation.clipped import ClipDecoded, clip_to_norm
from fedstrata.compress import ChainCodec, CompressionSpec
from fedstrata.core import RoundContext
from fedstrata.core.state import MemoryStateStore
from fedstrata.errors import ConfigError

SIZE = 64
LOSSY = {
    "int4+ef": CompressionSpec(quantize=4, stochastic=True, error_feedback=True, block_size=16),
    "int8": CompressionSpec(quantize=8, stochastic=True),
    "randk": CompressionSpec(sparsify="randk", density=0.125),
}


def clipped_input(seed: int, clip: float) -> np.ndarray:
    """What the client sends: a vector already clipped to ``clip`` (the client stage)."""
    v = np.random.default_rng(seed).standard_normal(SIZE).astype(np.float32) * 5
    return clip_to_norm(v, clip)[0]


def codec(name: str, clip: float) -> ClipDecoded:
    return ClipDecoded(ChainCodec(LOSSY[name], SIZE, MemoryStateStore()), clip)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(LOSSY)),
    clip=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**16),
    rounds=st.integers(1, 4),
)
def test_every_folded_update_is_within_clip_norm(name, clip, seed, rounds) -> None:
    """Whatever the codec adds (rounding, d/k rescaling, residuals), the fold is <= C."""
    c = codec(name, clip)
    for r in range(rounds):  # error feedback carries residuals from round to round
        ctx = RoundContext(r, seed).for_client(3)
        payload = c.encode(clipped_input(seed + r, clip), ctx)
        assert np.linalg.norm(c.decode(payload).astype(np.float64)) <= clip
        out = np.zeros(SIZE)
        c.accumulate(payload, out, 1.0)
        assert np.linalg.norm(out) <= clip
    assert c.take_stats().folded_norm_max <= clip


def test_the_lossy_codecs_do_exceed_the_bound_without_the_server_clip() -> None:
    """The property above is not vacuous: the raw decodings go past C."""
    clip, over = 1.0, {}
    for name in LOSSY:
        c = codec(name, clip)
        for r in range(3):
            c.encode(clipped_input(r, clip), RoundContext(r, 0).for_client(1))
            c.decode(c.encode(clipped_input(r, clip), RoundContext(r, 1).for_client(2)))
        stats = c.take_stats()
        over[name] = stats.decoded_norm_max
        assert stats.folded_norm_max <= clip
    assert over["randk"] > 2 * clip  # d/k rescaling
    assert max(over.values()) > clip


def test_accumulate_equals_folding_the_clipped_decoding_in_any_aggregator() -> None:
    c = codec("randk", 0.5)
    payloads = [
        c.encode(clipped_input(i, 0.5), RoundContext(0, 0).for_client(i)) for i in range(3)
    ]
    mean, median = WeightedMean(), CoordinateMedian()
    ms, ds = mean.init(SIZE), median.init(SIZE)
    for p in payloads:
        ms = mean.accumulate_payload(ms, c, p, 2.0)
        ds = median.accumulate_payload(ds, c, p, 1.0)
    decoded = np.stack([c.decode(p) for p in payloads])
    np.testing.assert_allclose(mean.finalize(ms), decoded.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(median.finalize(ds), np.median(decoded, axis=0))
    assert all(np.linalg.norm(v.astype(np.float64)) <= 0.5 for v in ds.vectors)


def test_within_the_bound_nothing_changes_and_bad_norms_are_refused() -> None:
    v = clipped_input(0, 0.5)
    out, norm = clip_to_norm(v, 1.0)
    np.testing.assert_array_equal(out, v)
    assert norm == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ConfigError, match="clip_norm"):
        ClipDecoded(ChainCodec(LOSSY["int8"], SIZE), 0.0)
