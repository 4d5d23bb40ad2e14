"""Fuzz: random and mutated payloads decode to a valid vector or raise PayloadError.

``accumulate`` must never leave the running sum modified when it raises.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.compress import PRESETS, ChainCodec, CompressionSpec, wire
from fedstrata.core import Payload, RoundContext
from fedstrata.core.payload import CodecId
from fedstrata.core.state import MemoryStateStore
from fedstrata.errors import PayloadError

SIZE = 3000
SPECS = {
    **PRESETS,
    "topk_bitmap_q2": CompressionSpec(sparsify="topk", density=0.5, quantize=2, block_size=16),
    "approx_f32": CompressionSpec(sparsify="topk_approx", density=0.05),
    "randk_q4_zstd": CompressionSpec(sparsify="randk", density=0.1, quantize=4, zstd=True),
}


def _valid_payload(name: str) -> tuple[ChainCodec, Payload]:
    codec = ChainCodec(SPECS[name], SIZE, MemoryStateStore())
    x = np.random.default_rng(0).standard_normal(SIZE).astype(np.float32)
    return codec, codec.encode(x, RoundContext(0, 1).for_client(0))


VALID = {name: _valid_payload(name) for name in SPECS}


def _check(codec: ChainCodec, payload: Payload) -> None:
    out = np.arange(SIZE, dtype=np.float64)
    before = out.copy()
    try:
        codec.accumulate(payload, out, 0.5)
    except PayloadError:
        np.testing.assert_array_equal(out, before)
        with pytest.raises(PayloadError):
            codec.decode(payload)
        return
    dense = codec.decode(payload)
    assert dense.dtype == np.float32
    assert dense.shape == (SIZE,)
    assert np.isfinite(dense).all()
    np.testing.assert_allclose(out, before + 0.5 * dense.astype(np.float64))


def _mutate(data: bytes, pos: int, value: int) -> bytes:
    if not data:
        return bytes([value])
    pos %= len(data)
    return data[:pos] + bytes([value]) + data[pos + 1 :]


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(SPECS)),
    in_params=st.booleans(),
    pos=st.integers(0, 10**6),
    value=st.integers(0, 255),
)
def test_single_byte_mutations(name: str, in_params: bool, pos: int, value: int) -> None:
    codec, payload = VALID[name]
    if in_params:
        mutated = Payload(CodecId.CHAIN, _mutate(payload.params, pos, value), payload.body)
    else:
        mutated = Payload(CodecId.CHAIN, payload.params, _mutate(payload.body, pos, value))
    _check(codec, mutated)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(SPECS)), cut=st.integers(0, 10**6), extra=st.binary(max_size=9))
def test_truncations_and_extensions(name: str, cut: int, extra: bytes) -> None:
    codec, payload = VALID[name]
    body = payload.body[: cut % (len(payload.body) + 1)] + extra
    _check(codec, Payload(CodecId.CHAIN, payload.params, body))
    params = payload.params[: cut % (len(payload.params) + 1)] + extra
    _check(codec, Payload(CodecId.CHAIN, params, payload.body))


@settings(max_examples=200, deadline=None)
@given(params=st.binary(max_size=40), body=st.binary(max_size=400))
def test_random_bytes(params: bytes, body: bytes) -> None:
    _check(VALID["none"][0], Payload(CodecId.CHAIN, params, body))


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(SPECS)), body=st.binary(max_size=2000))
def test_valid_params_with_random_body(name: str, body: bytes) -> None:
    codec, payload = VALID[name]
    _check(codec, Payload(CodecId.CHAIN, payload.params, body))


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(SPECS)), pos=st.integers(0, 10**6), value=st.integers(0, 255))
def test_mutated_wire_bytes_fail_the_checksum(name: str, pos: int, value: int) -> None:
    _, payload = VALID[name]
    raw = payload.to_bytes()
    mutated = _mutate(raw, pos, value)
    if mutated == raw:
        return
    with pytest.raises(PayloadError):
        Payload.from_bytes(mutated)


def test_wrong_codec_id_is_rejected() -> None:
    codec, payload = VALID["int8"]
    _check(codec, Payload(CodecId.DENSE_F32, payload.params, payload.body))


def test_zstd_bomb_is_rejected_before_expanding() -> None:
    import zstandard

    codec, payload = VALID["topk1_int8_ef_zstd"]
    bomb = zstandard.ZstdCompressor().compress(bytes(50_000_000))
    assert len(bomb) < 10_000
    _check(codec, Payload(CodecId.CHAIN, payload.params, bomb))


def test_oversized_varint_stream_claim_is_rejected() -> None:
    from fedstrata.compress import wire

    codec, payload = VALID["topk1_int8_ef"]
    params = wire.parse_params(payload.params, SIZE)
    huge = wire.ChainParams(**{**params.__dict__, "varint_nbytes": 1 << 60})
    with pytest.raises(PayloadError, match="too long"):
        codec.decode(Payload(CodecId.CHAIN, huge.to_bytes(), payload.body))


def test_zstd_frame_declaring_a_huge_size_is_rejected() -> None:
    codec, payload = VALID["topk1_int8_ef_zstd"]
    # the encoder sends small bodies raw, so set the zstd flag explicitly
    params = dataclasses.replace(wire.parse_params(payload.params, SIZE), zstd=True).to_bytes()
    # zstd frame: magic, single-segment with an 8-byte content size of 2**60, empty raw block
    frame = b"\x28\xb5\x2f\xfd\xe0" + (1 << 60).to_bytes(8, "little") + b"\x01\x00\x00"
    with pytest.raises(PayloadError, match="declares"):
        codec.decode(Payload(CodecId.CHAIN, params, frame))
