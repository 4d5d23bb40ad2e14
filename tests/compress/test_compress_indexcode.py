"""Index coding: delta+varint vs bitmap per chunk, round trip and validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.compress import indexcode as ic
from fedstrata.errors import PayloadError


def _decode(code: ic.IndexCode, size: int, log2: int) -> np.ndarray:
    table = ic.parse_table(code.table, size, log2)
    return ic.decode_indices(table, code.varint, code.bitmap, log2)


def _leb_len(v: int) -> int:
    n = 1
    while v >= 128:
        v >>= 7
        n += 1
    return n


def _expected_nbytes(idx: np.ndarray, size: int, log2: int) -> int:
    chunk = 1 << log2
    total = ic.table_nbytes(size, log2)
    for c in range(-(-size // chunk)):
        start, stop = c * chunk, min(size, (c + 1) * chunk)
        local = [int(i) - start for i in idx if start <= i < stop]
        gaps = [local[0]] + [b - a - 1 for a, b in itertools.pairwise(local)] if local else []
        total += min(sum(_leb_len(g) for g in gaps), -(-(stop - start) // 8))
    return total


@st.composite
def sparse_sets(draw: st.DrawFn) -> tuple[np.ndarray, int, int]:
    size = draw(st.integers(1, 5000))
    log2 = draw(st.integers(3, 12))
    density = draw(st.sampled_from([0.001, 0.01, 0.1, 0.3, 0.9, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(rng.random(size) < density).astype(np.int64)
    return idx, size, log2


@settings(max_examples=80, deadline=None)
@given(case=sparse_sets())
def test_roundtrip_and_smaller_coding_per_chunk(case: tuple[np.ndarray, int, int]) -> None:
    idx, size, log2 = case
    code = ic.encode_indices(idx, size, log2)
    decoded = _decode(code, size, log2)
    np.testing.assert_array_equal(decoded, code.order)
    np.testing.assert_array_equal(np.sort(decoded), idx)
    assert code.nbytes == _expected_nbytes(idx, size, log2)


def test_bitmap_for_dense_chunks_varint_for_sparse_ones() -> None:
    size, log2 = 4096, 10
    idx = np.concatenate([np.arange(0, 1024), np.array([2000, 3000])]).astype(np.int64)
    code = ic.encode_indices(idx, size, log2)
    table = ic.parse_table(code.table, size, log2)
    assert table.bitmap_mode.tolist() == [True, False, False, False]
    assert len(code.bitmap) == 128
    assert len(code.varint) == 4  # two gaps of two bytes
    np.testing.assert_array_equal(code.order, np.concatenate([idx[1024:], idx[:1024]]))


def test_table_rejects_count_above_chunk_length() -> None:
    code = ic.encode_indices(np.array([1, 2], dtype=np.int64), 16, 4)
    table = bytearray(code.table)
    table[1:5] = (17).to_bytes(4, "little")
    with pytest.raises(PayloadError, match="claims"):
        ic.parse_table(bytes(table), 16, 4)


@pytest.mark.parametrize(
    ("varint", "fragment"),
    [
        (b"\x01\x80", "ends inside"),
        (b"\xff\xff\x7f", "longer than"),
        (b"\x0f\x00", "past the end"),
        (b"\x01", "gaps decoded"),
    ],
)
def test_varint_stream_validation(varint: bytes, fragment: str) -> None:
    table = ic.parse_table(ic.encode_indices(np.array([1, 3], np.int64), 16, 4).table, 16, 4)
    with pytest.raises(PayloadError, match=fragment):
        ic.decode_indices(table, varint, b"", 4)


def test_bitmap_padding_and_count_validation() -> None:
    idx = np.arange(5, dtype=np.int64)
    code = ic.encode_indices(idx, 5, 4)
    table = ic.parse_table(code.table, 5, 4)
    assert table.bitmap_mode[0]
    with pytest.raises(PayloadError, match="padding"):
        ic.decode_indices(table, b"", bytes([0xFF]), 4)
    with pytest.raises(PayloadError, match="differ"):
        ic.decode_indices(table, b"", bytes([0x0F]), 4)
    with pytest.raises(PayloadError, match="bytes"):
        ic.decode_indices(table, b"", b"", 4)


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.integers(0, 2**42 - 1), max_size=200))
def test_varint_stream_matches_reference_leb128(values: list[int]) -> None:
    def leb(v: int) -> bytes:
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v >= 128 else 0))
            v >>= 7
            if not v:
                return bytes(out)

    arr = np.array(values, dtype=np.int64)
    stream = ic._varint_encode(arr, ic.varint_bytes(arr))
    assert stream == b"".join(leb(v) for v in values)
    decoded = ic._leb128(np.frombuffer(stream, np.uint8), max_nbytes=6)
    np.testing.assert_array_equal(decoded, arr)
