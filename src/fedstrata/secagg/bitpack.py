"""Fixed-width bit packing: ``count`` unsigned integers of ``bits`` bits in ``ceil(count *
bits / 8)`` bytes.

Wire encoding of secure aggregation's narrow values (Issue 12 part 4): ring elements
of a ``2^b`` ring (``b`` fitted to the cohort, often not a multiple of 8) and
Shamir share elements of ``GF(2^31 - 1)`` (31 bits). Element ``i`` occupies bits
``i * bits .. (i + 1) * bits - 1`` of the little-endian bit stream (least
significant bit first); the padding bits of the last byte are zero, so every
value sequence has exactly one encoding and :func:`unpack_bits` refuses any other.

Whole-byte widths are a byte view. Other widths go eight elements at a time: eight
elements of ``b`` bits are exactly ``b`` bytes, held as little-endian 64-bit words,
and element ``j`` of every group is shifted into (and out of) its word or the two
words it straddles with whole-array operations, eight of them per direction.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import PayloadError

__all__ = ["pack_bits", "packed_nbytes", "unpack_bits"]

_MAX_BITS = 64
_GROUP = 8  # elements whose bits fill whole bytes


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= _MAX_BITS:
        raise PayloadError(f"bit width must be in [1, {_MAX_BITS}], got {bits}")


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes of ``count`` packed values of ``bits`` bits: ``ceil(count * bits / 8)``."""
    _check_bits(bits)
    return (count * bits + 7) // 8


def _word(bits: int) -> tuple[str, int]:
    """The little-endian word that holds ``bits`` bits, and its size in bytes."""
    return ("<u4", 4) if bits <= 32 else ("<u8", 8)


def _slots(bits: int) -> list[tuple[int, int, bool]]:
    """Per element of a group: its first 64-bit word, its shift in that word, and
    whether it spills into the next word."""
    return [((j * bits) // 64, (j * bits) % 64, (j * bits) % 64 + bits > 64) for j in range(8)]


def pack_bits(values: NDArray[np.unsignedinteger], bits: int) -> bytes:
    """``values`` (1-D, each below ``2^bits``) packed at ``bits`` bits each.

    Raises:
        PayloadError: ``bits`` outside ``[1, 64]``, ``values`` not 1-D unsigned, or a
            value that does not fit ``bits`` bits.
    """
    _check_bits(bits)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.unsignedinteger):
        raise PayloadError(f"pack_bits needs a 1-D unsigned array, got {values.dtype}")
    if bits < _MAX_BITS and values.size and int(values.max()) >> bits:
        raise PayloadError(f"pack_bits: a value {int(values.max())} does not fit {bits} bits")
    size = packed_nbytes(values.size, bits)
    if values.size == 0:
        return b""
    if bits % 8 == 0:
        dtype, width = _word(bits)
        wide = np.ascontiguousarray(values, dtype=dtype).view(np.uint8).reshape(-1, width)
        return wide[:, : bits // 8].tobytes()
    groups = -(-values.size // _GROUP)
    padded = np.zeros(groups * _GROUP, dtype=np.uint64)
    padded[: values.size] = values
    lanes = padded.reshape(groups, _GROUP)
    words = np.zeros((groups, -(-bits // 8)), dtype=np.uint64)  # 8 bits words >= bits bytes
    for j, (word, shift, spill) in enumerate(_slots(bits)):
        words[:, word] |= lanes[:, j] << np.uint64(shift)
        if spill:
            words[:, word + 1] |= lanes[:, j] >> np.uint64(64 - shift)
    octets = words.astype("<u8").view(np.uint8).reshape(groups, -1)[:, :bits]
    return octets.tobytes()[:size]


def unpack_bits(blob: bytes, count: int, bits: int) -> NDArray[np.uint64]:
    """The ``count`` values of ``bits`` bits packed in ``blob`` (the inverse of
    :func:`pack_bits`).

    Raises:
        PayloadError: ``blob`` is not exactly ``packed_nbytes(count, bits)`` bytes,
            or its padding bits are not zero.
    """
    want = packed_nbytes(count, bits)
    if len(blob) != want or count < 0:
        raise PayloadError(
            f"packed block has {len(blob)} bytes, expected {want} ({count} x {bits} bits)"
        )
    raw = np.frombuffer(blob, dtype=np.uint8)
    if count * bits % 8 and raw[-1] >> (count * bits % 8):
        raise PayloadError("packed block has non-zero padding bits (not a canonical encoding)")
    if count == 0:
        return np.zeros(0, dtype=np.uint64)
    if bits % 8 == 0:
        dtype, width = _word(bits)
        wide = np.zeros((count, width), dtype=np.uint8)
        wide[:, : bits // 8] = raw.reshape(count, bits // 8)
        return wide.reshape(-1).view(dtype).astype(np.uint64)
    groups = -(-count // _GROUP)
    flat = np.zeros(groups * bits, dtype=np.uint8)
    flat[:want] = raw
    octets = np.zeros((groups, 8 * -(-bits // 8)), dtype=np.uint8)
    octets[:, :bits] = flat.reshape(groups, bits)
    words = octets.view("<u8").astype(np.uint64)
    mask = np.uint64((1 << bits) - 1)
    lanes = np.empty((groups, _GROUP), dtype=np.uint64)
    for j, (word, shift, spill) in enumerate(_slots(bits)):
        lane = words[:, word] >> np.uint64(shift)
        if spill:
            lane |= words[:, word + 1] << np.uint64(64 - shift)
        lanes[:, j] = lane & mask
    return lanes.reshape(-1)[:count].copy()
