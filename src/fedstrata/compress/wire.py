"""Wire format of a compression chain: the parameter block and the body sections.

A chain payload is a :class:`~fedstrata.core.payload.Payload` with codec id
``CodecId.CHAIN``. Its parameter block records the chain, so a server decodes any
client's payload without knowing that client's configuration::

    u8   layout version (1)
    u8   sparsify: 0 none, 1 topk, 2 topk_approx, 3 randk
    u8   bits per value: 32, 8, 4, 2, 1
    u8   flags: 1 stochastic, 2 error feedback, 4 zstd (others must be 0)
    LEB128 size, count, block_size, index chunk log2, varint stream bytes
    u64  random-k support seed (randk only)

Typically 13-25 bytes, so header plus parameters stay under 50 bytes. The body (zstd
frame of it when flag 4 is set)::

    index section     (topk, topk_approx: see :mod:`fedstrata.compress.indexcode`)
    scales            float32 per block (bits < 32)
    values            packed codes (bits < 32) or float32 (bits = 32)

:func:`parse_body` checks every length, count, index, code and scale before returning,
and raises :class:`~fedstrata.errors.PayloadError` on anything malformed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import zstandard

from fedstrata.compress import indexcode, quantize
from fedstrata.compress.spec import MAX_BLOCK_SIZE, Sparsify
from fedstrata.core.params import FloatVector
from fedstrata.errors import PayloadError

__all__ = ["ChainParams", "Decoded", "parse_body", "parse_params"]

LAYOUT_VERSION = 1
_SPARSIFY_IDS: dict[Sparsify, int] = {"none": 0, "topk": 1, "topk_approx": 2, "randk": 3}
_SPARSIFY_NAMES: dict[int, Sparsify] = {v: k for k, v in _SPARSIFY_IDS.items()}
_BITS = (32, 8, 4, 2, 1)
_STOCHASTIC, _FEEDBACK, _ZSTD = 1, 2, 4
_FIXED = struct.Struct("<BBBB")
_SEED = struct.Struct("<Q")
_MAX_VARINT_NBYTES = 10


@dataclass(frozen=True)
class ChainParams:
    """The decoded parameter block of a chain payload."""

    sparsify: Sparsify
    bits: int
    stochastic: bool
    error_feedback: bool
    zstd: bool
    size: int
    count: int
    block_size: int
    chunk_log2: int
    varint_nbytes: int
    seed: int = 0

    @property
    def has_index(self) -> bool:
        return self.sparsify in ("topk", "topk_approx")

    def to_bytes(self) -> bytes:
        flags = _STOCHASTIC * self.stochastic + _FEEDBACK * self.error_feedback + _ZSTD * self.zstd
        fixed = _FIXED.pack(LAYOUT_VERSION, _SPARSIFY_IDS[self.sparsify], self.bits, flags)
        ints = (self.size, self.count, self.block_size, self.chunk_log2, self.varint_nbytes)
        tail = _SEED.pack(self.seed) if self.sparsify == "randk" else b""
        return fixed + b"".join(_leb128(v) for v in ints) + tail

    def values_nbytes(self) -> int:
        """Bytes of the scales and values sections."""
        if self.bits == 32:
            return 4 * self.count
        scales = 4 * quantize.num_blocks(self.count, self.block_size)
        return scales + quantize.packed_nbytes(self.count, self.bits)

    def index_nbytes_min(self) -> int:
        """Bytes of the index section before the bitmap stream."""
        if not self.has_index:
            return 0
        return indexcode.table_nbytes(self.size, self.chunk_log2) + self.varint_nbytes


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for j in range(_MAX_VARINT_NBYTES):
        if pos + j >= len(data):
            raise PayloadError("chain parameters truncated inside a varint")
        byte = data[pos + j]
        value |= (byte & 0x7F) << (7 * j)
        if byte < 0x80:
            return value, pos + j + 1
    raise PayloadError(f"chain parameters: varint longer than {_MAX_VARINT_NBYTES} bytes")


def parse_params(data: bytes, size: int) -> ChainParams:
    """Parse and validate a parameter block for a vector of ``size`` coordinates.

    Raises:
        PayloadError: wrong version, unknown choice, bad flags, sizes out of range, or
            trailing bytes.
    """
    if len(data) < _FIXED.size:
        raise PayloadError(f"chain parameters truncated: {len(data)} bytes")
    version, sparsify_id, bits, flags = _FIXED.unpack_from(data)
    if version != LAYOUT_VERSION:
        raise PayloadError(f"chain layout version {version} unsupported (want {LAYOUT_VERSION})")
    if sparsify_id not in _SPARSIFY_NAMES or bits not in _BITS:
        raise PayloadError(f"chain parameters: sparsify id {sparsify_id} / bits {bits} unknown")
    if flags & ~(_STOCHASTIC | _FEEDBACK | _ZSTD):
        raise PayloadError(f"chain parameters: unknown flags {flags:#x}")
    ints, pos = [], _FIXED.size
    for _ in range(5):
        value, pos = _read_leb128(data, pos)
        ints.append(value)
    sparsify = _SPARSIFY_NAMES[sparsify_id]
    seed = 0
    if sparsify == "randk":
        if len(data) < pos + _SEED.size:
            raise PayloadError("chain parameters: random-k seed truncated")
        (seed,) = _SEED.unpack_from(data, pos)
        pos += _SEED.size
    if pos != len(data):
        raise PayloadError(f"chain parameters: {len(data) - pos} trailing bytes")
    size_, count, block_size, chunk_log2, varint_nbytes = ints
    params = ChainParams(
        sparsify, bits, bool(flags & _STOCHASTIC), bool(flags & _FEEDBACK),
        bool(flags & _ZSTD), size_, count, block_size, chunk_log2, varint_nbytes, seed,
    )  # fmt: skip
    _check_ranges(params, size)
    return params


def _check_ranges(p: ChainParams, size: int) -> None:
    if p.size != size:
        raise PayloadError(f"chain payload is for {p.size} coordinates, the codec has {size}")
    if p.count > size or (p.count < 1 and size > 0):
        raise PayloadError(f"chain payload count {p.count} outside [1, {size}]")
    if p.sparsify == "none" and p.count != size:
        raise PayloadError(f"dense chain payload count {p.count} != size {size}")
    if not 1 <= p.block_size <= MAX_BLOCK_SIZE:
        raise PayloadError(
            f"chain payload block_size {p.block_size} outside [1, {MAX_BLOCK_SIZE}]"
        )
    if not 1 <= p.chunk_log2 <= indexcode.MAX_CHUNK_LOG2:
        raise PayloadError(f"chain payload index chunk log2 {p.chunk_log2} out of range")
    if p.stochastic and p.bits == 32:
        raise PayloadError("chain payload claims stochastic rounding of float32 values")
    if not p.has_index and p.varint_nbytes:
        raise PayloadError("chain payload has an index stream but no index section")
    if p.varint_nbytes > p.count * -(-p.chunk_log2 // 7):
        raise PayloadError(
            f"chain payload varint stream of {p.varint_nbytes} bytes is too long for "
            f"{p.count} indices"
        )


@dataclass(frozen=True, eq=False)
class Decoded:
    """A validated chain payload: coordinates (``None`` for all) and their values."""

    indices: indexcode.IndexArray | None
    values: FloatVector


def expected_raw_nbytes(p: ChainParams, bitmap_nbytes: int) -> int:
    return p.index_nbytes_min() + bitmap_nbytes + p.values_nbytes()


def unzstd(p: ChainParams, body: bytes) -> bytes:
    """The raw body (decompressed when the zstd flag is set), bounded in size.

    Raises:
        PayloadError: not a zstd frame, or it expands past the largest valid body.
    """
    if not p.zstd:
        return body
    limit = p.index_nbytes_min() + -(-p.size // 8) + p.values_nbytes()
    try:
        declared = zstandard.frame_content_size(body)
        if declared > limit:  # -1: not declared; max_output_size bounds it then
            raise PayloadError(f"chain payload zstd frame declares {declared} bytes > {limit}")
        return zstandard.ZstdDecompressor().decompress(
            body, max_output_size=limit, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise PayloadError(f"chain payload zstd body is malformed: {exc}") from None


def parse_body(p: ChainParams, body: bytes) -> Decoded:
    """Decode and validate the body of a chain payload with parameters ``p``.

    Raises:
        PayloadError: any length, count, index, code or scale out of range.
    """
    raw = memoryview(unzstd(p, body))
    pos = 0
    indices = None
    if p.has_index:
        table = indexcode.parse_table(raw, p.size, p.chunk_log2)
        need = expected_raw_nbytes(p, table.bitmap_nbytes)
        if len(raw) != need:
            raise PayloadError(f"chain payload body has {len(raw)} bytes, expected {need}")
        pos = indexcode.table_nbytes(p.size, p.chunk_log2)
        varint = raw[pos : pos + p.varint_nbytes]
        pos += p.varint_nbytes
        bitmap = raw[pos : pos + table.bitmap_nbytes]
        pos += table.bitmap_nbytes
        indices = indexcode.decode_indices(table, varint, bitmap, p.chunk_log2)
        if indices.shape[0] != p.count:
            raise PayloadError(f"chain payload has {indices.shape[0]} indices, count {p.count}")
    elif len(raw) != p.values_nbytes():
        raise PayloadError(f"chain payload body has {len(raw)} bytes, want {p.values_nbytes()}")
    return Decoded(indices, _parse_values(p, raw[pos:]))


def _parse_values(p: ChainParams, raw: memoryview) -> FloatVector:
    if p.bits == 32:
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise PayloadError("chain payload float32 values contain NaN/Inf")
        return values
    nblocks = quantize.num_blocks(p.count, p.block_size)
    scales = np.frombuffer(raw, "<f4", nblocks).astype(np.float32)
    quantize.check_scales(scales, p.bits)
    codes = quantize.unpack_codes(raw[4 * nblocks :], p.bits, p.count)
    return quantize.dequantize(scales, codes, p.bits, p.block_size)
