"""Index coding for sparse updates: per chunk, delta + varint or a bitmap, whichever is smaller.

The vector is cut into chunks of ``2**chunk_log2`` coordinates. For each chunk the
encoder counts the bytes of both codings of the chunk's indices and keeps the smaller:

* **varint**: gaps between consecutive indices (the first relative to the chunk start,
  the others minus one, so a run of neighbours costs one byte each) as LEB128 varints;
  about ``log2(1/density) / 7`` bytes per index.
* **bitmap**: one bit per coordinate of the chunk; wins above ~1/8 density.

Layout of an :class:`IndexCode` on the wire (little-endian)::

    ceil(chunks/8) bytes  mode bits (1 = bitmap), chunk 0 in the lowest bit
    4 * chunks bytes      number of indices per chunk (uint32)
    varint_nbytes bytes   the varint gaps of all varint chunks, in chunk order
    bitmap bytes          ceil(len/8) bytes per bitmap chunk, in chunk order

Values travel in the order :func:`encode_indices` returns: all indices of varint chunks
(ascending), then all of bitmap chunks (ascending), so decoding needs no merge.
:func:`decode_indices` validates every count, gap and bit before returning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import PayloadError

__all__ = ["IndexCode", "decode_indices", "encode_indices", "table_nbytes", "varint_bytes"]

IndexArray = NDArray[np.int64]
DEFAULT_CHUNK_LOG2 = 16
MAX_CHUNK_LOG2 = 28


@dataclass(frozen=True, eq=False)
class IndexCode:
    """Encoded indices: the table and streams, and the indices in value order."""

    table: bytes
    varint: bytes
    bitmap: bytes
    order: IndexArray

    @property
    def nbytes(self) -> int:
        return len(self.table) + len(self.varint) + len(self.bitmap)


def _num_chunks(size: int, chunk_log2: int) -> int:
    return -(-size // (1 << chunk_log2))


def _chunk_lengths(size: int, chunk_log2: int) -> IndexArray:
    lengths = np.full(_num_chunks(size, chunk_log2), 1 << chunk_log2, dtype=np.int64)
    if lengths.shape[0]:
        lengths[-1] = size - ((lengths.shape[0] - 1) << chunk_log2)
    return lengths


def table_nbytes(size: int, chunk_log2: int) -> int:
    """Bytes of the chunk table for a vector of ``size`` coordinates."""
    chunks = _num_chunks(size, chunk_log2)
    return -(-chunks // 8) + 4 * chunks


def varint_bytes(values: IndexArray, max_bits: int = 63) -> IndexArray:
    """LEB128 length of each non-negative value below ``2**max_bits``."""
    nbytes = np.ones(values.shape[0], dtype=np.int64)
    for shift in range(7, max_bits, 7):
        nbytes += values >= (1 << shift)
    return nbytes


def encode_indices(idx: IndexArray, size: int, chunk_log2: int = DEFAULT_CHUNK_LOG2) -> IndexCode:
    """Encode sorted unique indices of ``range(size)``."""
    chunk_of = idx >> chunk_log2
    gaps = np.empty_like(idx)
    if idx.shape[0]:
        gaps[0] = idx[0] & ((1 << chunk_log2) - 1)
        np.subtract(idx[1:], idx[:-1], out=gaps[1:])
        gaps[1:] -= 1
        starts = np.flatnonzero(chunk_of[1:] != chunk_of[:-1]) + 1
        gaps[starts] = idx[starts] & ((1 << chunk_log2) - 1)
    lengths = _chunk_lengths(size, chunk_log2)
    counts = np.bincount(chunk_of, minlength=lengths.shape[0])
    nbytes = varint_bytes(gaps, chunk_log2)
    cum_bytes = np.concatenate([[0], np.cumsum(nbytes)])  # bytes before each index
    varint_cost = np.diff(cum_bytes[np.cumsum(counts)], prepend=0)
    bitmap_mode = (lengths + 7) // 8 < varint_cost
    table = np.packbits(bitmap_mode, bitorder="little").tobytes()
    table += counts.astype("<u4").tobytes()
    if not bitmap_mode.any():
        return IndexCode(table, _varint_encode(gaps, nbytes), b"", idx)
    in_bitmap = bitmap_mode[chunk_of]
    order = np.concatenate([idx[~in_bitmap], idx[in_bitmap]])
    keep = ~in_bitmap
    varint = _varint_encode(gaps[keep], nbytes[keep])
    bitmap = _bitmap_encode(idx[in_bitmap], chunk_of[in_bitmap], lengths, bitmap_mode, chunk_log2)
    return IndexCode(table, varint, bitmap, order)


def _varint_encode(values: IndexArray, nbytes: IndexArray) -> bytes:
    """LEB128 bytes of ``values``, written byte plane by byte plane without masking.

    Plane ``j`` writes every value's ``j``-th byte at ``start + j``; where a value is
    shorter, that lands on a later value's lower byte, which a later (lower) plane
    overwrites, so planes go from the highest down.
    """
    width = int(nbytes.max(initial=0))
    starts = np.cumsum(nbytes) - nbytes
    total = int(starts[-1] + nbytes[-1]) if values.shape[0] else 0
    out = np.empty(total + width, dtype=np.uint8)
    for j in reversed(range(width)):
        plane = ((values >> (7 * j)) & 0x7F).astype(np.uint8)
        plane |= (nbytes > j + 1).view(np.uint8) << np.uint8(7)
        out[starts + j] = plane
    return out[:total].tobytes()


def _bitmap_offsets(lengths: IndexArray, bitmap_mode: NDArray[np.bool_]) -> IndexArray:
    """Bit offset of each chunk inside the bitmap stream (only bitmap chunks count)."""
    nbytes = np.where(bitmap_mode, (lengths + 7) // 8, 0)
    return 8 * (np.cumsum(nbytes) - nbytes)


def _bitmap_encode(
    idx: IndexArray,
    chunk_of: IndexArray,
    lengths: IndexArray,
    bitmap_mode: NDArray[np.bool_],
    chunk_log2: int,
) -> bytes:
    offsets = _bitmap_offsets(lengths, bitmap_mode)
    total_bits = int(8 * ((lengths[bitmap_mode] + 7) // 8).sum())
    bits = np.zeros(total_bits, dtype=np.uint8)
    bits[offsets[chunk_of] + (idx - (chunk_of << chunk_log2))] = 1
    return np.packbits(bits, bitorder="little").tobytes()


@dataclass(frozen=True)
class _Table:
    bitmap_mode: NDArray[np.bool_]
    counts: IndexArray
    lengths: IndexArray
    bitmap_nbytes: int


def parse_table(data: bytes | memoryview, size: int, chunk_log2: int) -> _Table:
    """Validate the chunk table (the first :func:`table_nbytes` bytes of ``data``).

    Raises:
        PayloadError: short data, counts above the chunk length, or stray mode bits.
    """
    lengths = _chunk_lengths(size, chunk_log2)
    chunks = lengths.shape[0]
    need = table_nbytes(size, chunk_log2)
    if len(data) < need:
        raise PayloadError(f"index table truncated: {len(data)} bytes, need {need}")
    mode_nbytes = -(-chunks // 8)
    mode_bits = np.unpackbits(np.frombuffer(data, np.uint8, mode_nbytes), bitorder="little")
    if mode_bits[chunks:].any():
        raise PayloadError("index table: mode bits set past the last chunk")
    bitmap_mode = mode_bits[:chunks].astype(np.bool_)
    counts = np.frombuffer(data, "<u4", chunks, mode_nbytes).astype(np.int64)
    if (counts > lengths).any():
        bad = int(np.flatnonzero(counts > lengths)[0])
        raise PayloadError(
            f"index table: chunk {bad} claims {counts[bad]} indices but has {lengths[bad]} slots"
        )
    bitmap_nbytes = int(((lengths[bitmap_mode] + 7) // 8).sum())
    return _Table(bitmap_mode, counts, lengths, bitmap_nbytes)


def decode_indices(
    table: _Table, varint: bytes | memoryview, bitmap: bytes | memoryview, chunk_log2: int
) -> IndexArray:
    """Indices in value order from a parsed table and the two streams.

    Raises:
        PayloadError: a truncated varint, a gap past its chunk, a count mismatch, or
            bits set in a bitmap's padding.
    """
    v_idx = _varint_decode(table, np.frombuffer(varint, np.uint8), chunk_log2)
    if not table.bitmap_mode.any():
        return v_idx
    b_idx = _bitmap_decode(table, np.frombuffer(bitmap, np.uint8), chunk_log2)
    return np.concatenate([v_idx, b_idx])


def _varint_decode(table: _Table, raw: NDArray[np.uint8], chunk_log2: int) -> IndexArray:
    gaps = _leb128(raw, max_nbytes=-(-chunk_log2 // 7))
    counts = np.where(table.bitmap_mode, 0, table.counts)
    if gaps.shape[0] != int(counts.sum()):
        raise PayloadError(
            f"index varints: {gaps.shape[0]} gaps decoded, the table announces {counts.sum()}"
        )
    if not gaps.shape[0]:
        return gaps
    has = counts > 0
    seg_counts = counts[has]
    ends = np.cumsum(gaps + 1)
    seg_first = np.cumsum(seg_counts) - seg_counts
    base = np.concatenate([[0], ends[seg_first[1:] - 1]]) if seg_first.shape[0] else ends[:0]
    local = ends - np.repeat(base, seg_counts) - 1
    if (local >= np.repeat(table.lengths[has], seg_counts)).any():
        raise PayloadError("index varints: an index runs past the end of its chunk")
    result: IndexArray = local + np.repeat(np.flatnonzero(has) << chunk_log2, seg_counts)
    return result


def _leb128(raw: NDArray[np.uint8], max_nbytes: int) -> IndexArray:
    """Decode a stream of LEB128 varints of at most ``max_nbytes`` bytes each."""
    if not raw.shape[0]:
        return np.empty(0, dtype=np.int64)
    ends = np.flatnonzero(raw < 0x80)
    if not ends.shape[0] or ends[-1] != raw.shape[0] - 1:
        raise PayloadError("index varints: the stream ends inside a varint")
    starts = np.concatenate([[0], ends[:-1] + 1])
    nbytes = ends - starts + 1
    if int(nbytes.max()) > max_nbytes:
        raise PayloadError(f"index varints: a varint is longer than {max_nbytes} bytes")
    values = np.zeros(ends.shape[0], dtype=np.int64)
    for j in range(int(nbytes.max())):
        sel = nbytes > j
        values[sel] |= (raw[starts[sel] + j].astype(np.int64) & 0x7F) << (7 * j)
    return values


def _bitmap_decode(table: _Table, raw: NDArray[np.uint8], chunk_log2: int) -> IndexArray:
    if raw.shape[0] != table.bitmap_nbytes:
        raise PayloadError(
            f"index bitmap: {raw.shape[0]} bytes, the table implies {table.bitmap_nbytes}"
        )
    chunk_ids = np.flatnonzero(table.bitmap_mode)
    offsets = _bitmap_offsets(table.lengths, table.bitmap_mode)[chunk_ids]
    pos = np.flatnonzero(np.unpackbits(raw, bitorder="little"))
    which = np.searchsorted(offsets, pos, side="right") - 1
    local = pos - offsets[which]
    if (local >= table.lengths[chunk_ids][which]).any():
        raise PayloadError("index bitmap: a padding bit past the chunk end is set")
    found = np.bincount(which, minlength=chunk_ids.shape[0])
    if (found != table.counts[chunk_ids]).any():
        raise PayloadError("index bitmap: bits set differ from the counts in the table")
    return local + (chunk_ids[which] << chunk_log2)
