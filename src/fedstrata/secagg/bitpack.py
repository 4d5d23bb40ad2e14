"""Fixed-width bit packing: ``count`` unsigned integers of ``bits`` bits in ``ceil(count *
bits / 8)`` bytes.

Wire encoding of secure aggregation's narrow values (Issue 12 part 4): ring elements
of a ``2^b`` ring (``b`` fitted to the cohort, often not a multiple of 8) and
Shamir share elements of ``GF(2^31 - 1)`` (31 bits). Element ``i`` occupies bits
``i * bits .. (i + 1) * bits - 1`` of the little-endian bit stream (least
significant bit first); the padding bits of the last byte are zero, so every
value sequence has exactly one encoding and :func:`unpack_bits` refuses any other.
Whole-byte widths take a byte-view fast path; other widths are packed in blocks
of :data:`BLOCK` elements (a multiple of 8, so blocks start on byte boundaries),
each through the bits of its little-endian words (``numpy.unpackbits`` /
``packbits``), which bounds the temporaries.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import PayloadError

__all__ = ["BLOCK", "pack_bits", "packed_nbytes", "unpack_bits"]

BLOCK = 1 << 15
"""Elements packed per block (a multiple of 8)."""

_MAX_BITS = 64


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= _MAX_BITS:
        raise PayloadError(f"bit width must be in [1, {_MAX_BITS}], got {bits}")


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes of ``count`` packed values of ``bits`` bits: ``ceil(count * bits / 8)``."""
    _check_bits(bits)
    return (count * bits + 7) // 8


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
    dtype, width = _word(bits)
    v = np.ascontiguousarray(values, dtype=dtype)
    if bits % 8 == 0:
        return v.view(np.uint8).reshape(-1, width // 8)[:, : bits // 8].tobytes()
    parts = []
    for start in range(0, v.size, BLOCK):
        parts.append(_pack_block(v[start : start + BLOCK], bits))
    return b"".join(parts)


def _word(bits: int) -> tuple[str, int]:
    """The little-endian word that holds values of ``bits`` bits, and its width."""
    return ("<u4", 32) if bits <= 32 else ("<u8", 64)


def _pack_block(v: NDArray[np.unsignedinteger], bits: int) -> bytes:
    """One block of little-endian words (starting on a byte boundary): the low
    ``bits`` bits of each word, one after the other."""
    octets = v.view(np.uint8).reshape(v.size, -1)
    matrix = np.unpackbits(octets, axis=1, bitorder="little")[:, :bits]
    return np.packbits(matrix.reshape(-1), bitorder="little").tobytes()


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
    if bits % 8 == 0:
        dtype, width = _word(bits)
        wide = np.zeros((count, width // 8), dtype=np.uint8)
        wide[:, : bits // 8] = raw.reshape(count, bits // 8)
        return wide.reshape(-1).view(dtype).astype(np.uint64)
    out = np.empty(count, dtype=np.uint64)
    step = BLOCK * bits // 8  # bytes per full block
    for index, start in enumerate(range(0, count, BLOCK)):
        n = min(BLOCK, count - start)
        chunk = raw[index * step : index * step + packed_nbytes(n, bits)]
        out[start : start + n] = _unpack_block(chunk, n, bits)
    return out


def _unpack_block(chunk: NDArray[np.uint8], n: int, bits: int) -> NDArray[np.uint64]:
    dtype, width = _word(bits)
    matrix = np.zeros((n, width), dtype=np.uint8)
    matrix[:, :bits] = np.unpackbits(chunk, count=n * bits, bitorder="little").reshape(n, bits)
    words = np.packbits(matrix, axis=1, bitorder="little").reshape(-1).view(dtype)
    return words.astype(np.uint64)
