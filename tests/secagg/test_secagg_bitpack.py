"""Fixed-width bit packing: exact round trips at every width, one encoding per value."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import PayloadError
from fedstrata.secagg.bitpack import pack_bits, packed_nbytes, unpack_bits


@settings(max_examples=120, deadline=None)
@given(
    bits=st.integers(1, 64),
    count=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_packed_values_round_trip_in_ceil_count_bits_over_8_bytes(
    bits: int, count: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, count, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, count, dtype=np.uint64
    )
    if bits < 64:
        values &= np.uint64((1 << bits) - 1)
    blob = pack_bits(values, bits)
    assert len(blob) == packed_nbytes(count, bits) == (count * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(blob, count, bits), values)


@pytest.mark.parametrize("bits", [5, 20, 27, 31, 33, 57, 63])
def test_the_encoding_is_one_little_endian_bit_stream(bits: int) -> None:
    """Element ``i`` is bits ``i * bits ..`` of the blob read as one integer, across
    group and word boundaries, for a long vector."""
    count = 9611
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 2**bits, count, dtype=np.uint64, endpoint=False)
    blob = pack_bits(values, bits)
    as_int = int.from_bytes(blob, "little")
    for i in (0, 1, 7, 8, 9, 1000, count - 2, count - 1):
        assert (as_int >> (i * bits)) & ((1 << bits) - 1) == int(values[i])
    assert as_int >> (count * bits) == 0
    np.testing.assert_array_equal(unpack_bits(blob, count, bits), values)


def test_extreme_values_of_every_width_survive() -> None:
    for bits in range(1, 65):
        top = (1 << bits) - 1
        values = np.array([0, top, 1, top, 0], dtype=np.uint64)
        np.testing.assert_array_equal(unpack_bits(pack_bits(values, bits), 5, bits), values)


def test_a_value_wider_than_the_width_is_refused() -> None:
    with pytest.raises(PayloadError, match="does not fit 20 bits"):
        pack_bits(np.array([1 << 20], dtype=np.uint32), 20)
    with pytest.raises(PayloadError, match="unsigned"):
        pack_bits(np.array([1], dtype=np.int64), 8)
    with pytest.raises(PayloadError, match="bit width"):
        pack_bits(np.array([1], dtype=np.uint8), 0)


def test_malformed_blocks_are_refused() -> None:
    blob = pack_bits(np.array([3, 5, 7], dtype=np.uint32), 20)  # 60 bits: 4 padding bits
    with pytest.raises(PayloadError, match="expected 8"):
        unpack_bits(blob[:-1], 3, 20)
    with pytest.raises(PayloadError, match="padding"):
        unpack_bits(blob[:-1] + bytes([blob[-1] | 0x80]), 3, 20)
