"""Block quantization: error bounds, unbiasedness, packing and validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedstrata.compress import quantize as q
from fedstrata.errors import PayloadError

BITS = [8, 4, 2, 1]

finite_f32 = arrays(
    np.float32,
    st.integers(1, 700),
    elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
)


def _roundtrip(x: np.ndarray, bits: int, block: int, rng: np.random.Generator | None):
    scales, codes = q.quantize(x, bits, block, rng)
    packed = q.pack_codes(codes, bits)
    assert len(packed) == q.packed_nbytes(x.shape[0], bits)
    codes2 = q.unpack_codes(packed, bits, x.shape[0])
    np.testing.assert_array_equal(codes, codes2)
    q.check_scales(scales, bits)
    return q.dequantize(scales, codes2, bits, block)


@settings(max_examples=60, deadline=None)
@given(
    x=finite_f32,
    bits=st.sampled_from(BITS),
    block=st.integers(1, 300),
    stochastic=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_roundtrip_within_stated_bound(
    x: np.ndarray, bits: int, block: int, stochastic: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed) if stochastic else None
    out = _roundtrip(x, bits, block, rng)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    for start in range(0, x.shape[0], block):
        blk, got = x[start : start + block], out[start : start + block]
        peak = float(np.abs(blk).max())
        bound = q.error_bound(peak, bits, stochastic)
        err = np.abs(got.astype(np.float64) - blk.astype(np.float64))
        assert err.max() <= bound * (1 + 1e-5) + 1e-37


@pytest.mark.parametrize("bits", BITS)
def test_stochastic_rounding_is_unbiased(bits: int) -> None:
    x = np.random.default_rng(7).standard_normal(32).astype(np.float32)
    copies = 4000
    tiled = np.tile(x, copies)  # one block per copy: same scale, independent rounding
    out = _roundtrip(tiled, bits, 32, np.random.default_rng(11)).reshape(copies, 32)
    bound = q.error_bound(float(np.abs(x).max()), bits, True)
    # per-value sd <= bound; the mean over copies has sd <= bound / sqrt(copies)
    assert np.abs(out.mean(axis=0) - x).max() <= 5 * bound / np.sqrt(copies)


def test_deterministic_rounding_is_deterministic_and_biased_for_sign() -> None:
    x = np.array([0.1, -0.2, 0.3, 1.0], dtype=np.float32)
    a = _roundtrip(x, 1, 4, None)
    np.testing.assert_array_equal(a, _roundtrip(x, 1, 4, None))
    np.testing.assert_allclose(a, np.sign(x) * np.abs(x).mean())


def test_tiny_and_zero_blocks_quantize_to_zero() -> None:
    x = np.array([0, 0, 1e-35, -1e-36], dtype=np.float32)
    for bits in BITS:
        assert np.all(_roundtrip(x, bits, 2, None)[:2] == 0)
        assert np.abs(_roundtrip(x, bits, 2, None)).max() <= 1e-30


@pytest.mark.parametrize(("bits", "bad"), [(4, 0x0F), (2, 0x03), (8, 0xFF)])
def test_unpack_rejects_codes_above_top(bits: int, bad: int) -> None:
    with pytest.raises(PayloadError, match="top code"):
        q.unpack_codes(bytes([bad]), bits, 8 // bits)


@pytest.mark.parametrize("bits", [4, 2, 1])
def test_unpack_rejects_nonzero_padding_and_bad_length(bits: int) -> None:
    with pytest.raises(PayloadError, match="padding"):
        q.unpack_codes(bytes([0x80]), bits, 1)
    with pytest.raises(PayloadError, match="bytes"):
        q.unpack_codes(b"\x00\x00", bits, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0, 3e38])
def test_check_scales_rejects(bad: float) -> None:
    with pytest.raises(PayloadError, match="scale"):
        q.check_scales(np.array([1.0, bad], dtype=np.float32), 8)


def test_scales_are_capped_so_decoding_stays_finite() -> None:
    x = np.full(4, np.finfo(np.float32).max, dtype=np.float32)
    out = _roundtrip(x, 8, 4, None)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, x, rtol=1e-6)
