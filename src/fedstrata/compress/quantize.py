"""Block-wise uniform quantization to 8, 4, 2 or 1 bits, with one float32 scale per block.

Values are cut into blocks of ``block_size``; each block has its own scale, so one
large coordinate only coarsens its own block.

* ``bits`` in {8, 4, 2}: symmetric levels ``q in [-L, L]`` with ``L = 2**(bits-1) - 1``
  (127, 7, 1; 2 bits is ternary as in TernGrad, Wen et al., NeurIPS 2017) and
  ``scale = max|x| / L``. Deterministic rounding errs by at most ``scale / 2`` per value;
  stochastic rounding (``floor(x/scale + u)``, ``u ~ U[0, 1)``; QSGD, Alistarh et al.,
  NeurIPS 2017) is unbiased and errs by less than ``scale``.
* ``bits = 1``: deterministic is the scaled sign ``sign(x) * mean|x|`` of EF-signSGD
  (Karimireddy et al., ICML 2019), error at most ``max|x|``; stochastic sends ``+-max|x|``
  with ``P(+) = (1 + x / max|x|) / 2``, unbiased, error at most ``2 max|x|``.

Blocks whose largest magnitude is below ``TINY = 1e-30`` are sent as zeros (their error
is below 1e-30), and scales are capped so that ``L * scale`` stays a finite float32.

Codes are stored unsigned (``u = q + L``, or the sign bit), packed little-end first,
``8 / bits`` per byte. :func:`unpack_codes` and :func:`check_scales` validate what came
off the wire, so that dequantized values are always finite.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.params import FloatVector
from fedstrata.errors import PayloadError

__all__ = [
    "check_scales",
    "dequantize",
    "error_bound",
    "levels",
    "max_scale",
    "num_blocks",
    "pack_codes",
    "packed_nbytes",
    "quantize",
    "unpack_codes",
]

Codes = NDArray[np.uint8]
_ROWS_ELEMS = 1 << 16  # elements per processing step (stay in cache)
_F32_MAX = float(np.finfo(np.float32).max)
TINY = 1e-30  # blocks whose largest magnitude is below this are sent as zeros


def levels(bits: int) -> int:
    """Largest level ``L`` of a symmetric ``bits``-bit quantizer (1 for one bit)."""
    return 1 if bits == 1 else (1 << (bits - 1)) - 1


def num_blocks(count: int, block_size: int) -> int:
    """Number of scale blocks for ``count`` values."""
    return -(-count // block_size)


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes that ``count`` packed codes of ``bits`` bits take."""
    return -(-count * bits // 8)


def error_bound(peak: float, bits: int, stochastic: bool) -> float:
    """Largest per-value error for a block whose largest magnitude is ``peak``."""
    if bits == 1:
        return max((2.0 if stochastic else 1.0) * peak, TINY)
    step = peak / levels(bits)
    return max(step if stochastic else step / 2, TINY)


def quantize(
    values: FloatVector, bits: int, block_size: int, rng: np.random.Generator | None
) -> tuple[FloatVector, Codes]:
    """Quantize ``values`` block by block.

    Args:
        values: 1-D finite float32 values.
        bits: 8, 4, 2 or 1.
        block_size: values per scale.
        rng: generator for stochastic rounding, or ``None`` for deterministic rounding.

    Returns:
        ``(scales, codes)``: one float32 scale per block and one unsigned code per value.
    """
    count = values.shape[0]
    scales = np.empty(num_blocks(count, block_size), dtype=np.float32)
    codes = np.empty(count, dtype=np.uint8)
    full = count // block_size
    rows = values[: full * block_size].reshape(full, block_size)
    step = max(1, _ROWS_ELEMS // block_size)
    for r0 in range(0, full, step):
        r1 = min(full, r0 + step)
        out = codes[r0 * block_size : r1 * block_size].reshape(r1 - r0, block_size)
        scales[r0:r1] = _quantize_rows(rows[r0:r1], bits, rng, out)
    if full * block_size < count:
        tail = values[full * block_size :].reshape(1, -1)
        scales[full:] = _quantize_rows(tail, bits, rng, codes[full * block_size :].reshape(1, -1))
    return scales, codes


def _quantize_rows(
    rows: NDArray[np.float32], bits: int, rng: np.random.Generator | None, out: Codes
) -> FloatVector:
    """Quantize each row as one block into ``out``; return the row scales."""
    mags = np.abs(rows)
    peak = mags.max(axis=1)
    if bits == 1:
        return _sign_rows(rows, mags, peak, rng, out)
    top = levels(bits)
    scales = _safe_scales(peak / np.float32(top), bits)
    with np.errstate(divide="ignore"):
        inv = np.where(scales > 0, np.float32(1) / scales, np.float32(0)).astype(np.float32)
    scaled = rows * inv[:, None]
    scaled += np.float32(top)
    if rng is None:
        np.rint(scaled, out=scaled)
    else:
        scaled += rng.random(scaled.shape, dtype=np.float32)
        np.floor(scaled, out=scaled)
    np.clip(scaled, 0, 2 * top, out=scaled)
    out[...] = scaled
    return scales


def _safe_scales(scales: FloatVector, bits: int) -> FloatVector:
    """Zero the scales of blocks below :data:`TINY` and cap the rest at the decodable limit."""
    limit = max_scale(bits)
    safe: FloatVector = np.where(scales >= TINY / levels(bits), scales, np.float32(0))
    return np.minimum(safe, limit).astype(np.float32)


def _sign_rows(
    rows: NDArray[np.float32],
    mags: NDArray[np.float32],
    peak: FloatVector,
    rng: np.random.Generator | None,
    out: Codes,
) -> FloatVector:
    if rng is None:
        out[...] = rows >= 0
        return _safe_scales(mags.mean(axis=1, dtype=np.float64).astype(np.float32), 1)
    scales = _safe_scales(peak, 1)
    with np.errstate(divide="ignore"):
        inv = np.where(scales > 0, np.float32(0.5) / scales, np.float32(0)).astype(np.float32)
    prob_up = rows * inv[:, None] + np.float32(0.5)
    out[...] = rng.random(rows.shape, dtype=np.float32) < prob_up
    return scales


def dequantize(scales: FloatVector, codes: Codes, bits: int, block_size: int) -> FloatVector:
    """Values from validated scales and codes (the inverse of :func:`quantize`)."""
    count = codes.shape[0]
    top = levels(bits)
    table = np.arange(256, dtype=np.float32)
    table = 2 * table - 1 if bits == 1 else table - top
    values = table[codes]
    full = count // block_size
    rows = values[: full * block_size].reshape(full, block_size)
    rows *= scales[:full, None]
    if full * block_size < count:
        values[full * block_size :] *= scales[full]
    return values


def max_scale(bits: int) -> np.float32:
    """Largest scale whose top level ``L * scale`` is still a finite float32."""
    return np.float32(np.nextafter(np.float32(_F32_MAX / levels(bits)), np.float32(0)))


def check_scales(scales: FloatVector, bits: int) -> None:
    """Reject scales that are negative, non-finite, or overflow float32 at the top level.

    Raises:
        PayloadError: a scale is out of range.
    """
    limit = max_scale(bits)
    bad = ~((scales >= 0) & (scales <= limit))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise PayloadError(
            f"quantization scale #{first} is {scales[first]!r}: must be finite, >= 0 and "
            f"<= {limit:.3g}"
        )


def pack_codes(codes: Codes, bits: int) -> bytes:
    """Pack unsigned ``bits``-bit codes, ``8 // bits`` per byte, first code lowest."""
    if bits == 8:
        return codes.tobytes()
    per = 8 // bits
    padded = np.zeros(-(-codes.shape[0] // per) * per, dtype=np.uint8)
    padded[: codes.shape[0]] = codes
    grid = padded.reshape(-1, per)
    packed = grid[:, 0].copy()
    for j in range(1, per):
        packed |= grid[:, j] << np.uint8(j * bits)
    return packed.tobytes()


def unpack_codes(data: bytes | memoryview, bits: int, count: int) -> Codes:
    """Unpack and validate ``count`` codes of ``bits`` bits.

    Raises:
        PayloadError: wrong length, a code above the top level, or non-zero padding.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.shape[0] != packed_nbytes(count, bits):
        raise PayloadError(
            f"quantized values: {raw.shape[0]} bytes for {count} codes of {bits} bits, "
            f"expected {packed_nbytes(count, bits)}"
        )
    if bits == 8:
        codes = raw
    else:
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        grid = np.empty((raw.shape[0], per), dtype=np.uint8)
        for j in range(per):
            np.bitwise_and(raw >> np.uint8(j * bits), mask, out=grid[:, j])
        flat = grid.reshape(-1)
        if flat[count:].any():
            raise PayloadError("quantized values: padding bits after the last code are not 0")
        codes = flat[:count]
    top = 1 if bits == 1 else 2 * levels(bits)
    if bits != 1 and int(codes.max(initial=0)) > top:
        raise PayloadError(f"quantized values: a {bits}-bit code exceeds the top code {top}")
    return codes
