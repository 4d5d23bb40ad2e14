"""Vectorised Shamir secret sharing over the prime field GF(2^31 - 1).

Shamir, "How to share a secret", CACM 1979. A secret of ``B`` bytes is cut into
``ceil(8 B / 30)`` 30-bit chunks (little-endian; the last holds the remaining top
bits), each the constant term of its own random polynomial of degree ``t - 1``;
share ``x`` is the chunks' evaluations at ``x``, 31-bit field elements packed at 31
bits (:func:`shares_to_bytes`, :func:`share_nbytes`): a 32-byte mask key is nine
elements in 35 bytes, a 16-byte self-mask seed five elements in 20 bytes. Sharing many
secrets is one matrix product ``V @ C`` (Vandermonde rows times coefficients),
done exactly in float64 BLAS by splitting ``C`` into 11-bit limbs (every partial
sum stays below 2^53). Reconstruction is Lagrange interpolation at zero, batched
over many secrets, with modular inverses by Fermat's little theorem.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import PayloadError, SecAggError
from fedstrata.secagg.bitpack import packed_nbytes

__all__ = [
    "CHUNKS",
    "PRIME",
    "SHARE_BYTES",
    "FieldArray",
    "ShamirScheme",
    "bytes_to_field",
    "chunks_for",
    "combine",
    "field_to_bytes",
    "lagrange_at_zero",
    "lagrange_leave_one_out",
    "reconstruct",
    "share_nbytes",
    "shares_from_bytes",
    "shares_to_bytes",
]

PRIME = (1 << 31) - 1
FIELD_BITS = 31
CHUNK_BITS = 30
SECRET_BYTES = 32


def chunks_for(secret_bytes: int) -> int:
    """Field elements of a ``secret_bytes`` secret: ``ceil(8 secret_bytes / 30)``."""
    return -(-8 * secret_bytes // CHUNK_BITS)


def share_nbytes(secret_bytes: int) -> int:
    """Bytes of one packed share of a ``secret_bytes`` secret."""
    return packed_nbytes(chunks_for(secret_bytes), FIELD_BITS)


CHUNKS = chunks_for(SECRET_BYTES)  # 9: a 32-byte secret
SHARE_BYTES = share_nbytes(SECRET_BYTES)  # 35
_LIMB_BITS = 11
_MAX_TERMS = 1 << 11  # keeps t * 2^31 * 2^11 < 2^53

FieldArray = NDArray[np.uint64]


def _bits_to_values(bits: NDArray[np.uint8], width: int) -> FieldArray:
    """(..., n * width) little-endian bits -> (..., n) values of ``width <= 32`` bits."""
    lead = bits.shape[:-1]
    words = np.zeros((*lead, bits.shape[-1] // width, 32), dtype=np.uint8)
    words[..., :width] = bits.reshape(*lead, -1, width)
    packed = np.packbits(words, axis=-1, bitorder="little")
    out: FieldArray = packed.reshape(-1).view("<u4").reshape(*lead, -1).astype(np.uint64)
    return out


def _values_to_bits(values: FieldArray, width: int) -> NDArray[np.uint8]:
    """(..., n) values below ``2^width`` (``width <= 32``) -> (..., n * width) bits."""
    octets = np.ascontiguousarray(values, dtype="<u4").view(np.uint8)
    bits = np.unpackbits(octets.reshape(*values.shape, 4), axis=-1, bitorder="little")
    return bits[..., :width].reshape(*values.shape[:-1], values.shape[-1] * width)


def bytes_to_field(secrets: NDArray[np.uint8]) -> FieldArray:
    """(s, B) secret bytes -> (s, ceil(8 B / 30)) field elements (30-bit chunks,
    little-endian)."""
    width = 8 * secrets.shape[1]
    bits = np.zeros((secrets.shape[0], chunks_for(secrets.shape[1]) * CHUNK_BITS), np.uint8)
    bits[:, :width] = np.unpackbits(secrets, axis=1, bitorder="little")
    return _bits_to_values(bits, CHUNK_BITS)


def field_to_bytes(values: FieldArray, secret_bytes: int = SECRET_BYTES) -> NDArray[np.uint8]:
    """(s, ceil(8 B / 30)) field elements -> (s, B) secret bytes, ``B = secret_bytes``.

    Raises:
        SecAggError: a value does not fit its chunk (30 bits; the rest of ``8 B``
            for the last): the shares are inconsistent.
    """
    width = 8 * secret_bytes
    if values.shape[-1] != chunks_for(secret_bytes) or np.any(values >> np.uint64(CHUNK_BITS)):
        raise SecAggError("reconstructed secret is out of range: the shares are inconsistent")
    bits = _values_to_bits(values, CHUNK_BITS)
    if bits[:, width:].any():
        raise SecAggError("reconstructed secret is out of range: the shares are inconsistent")
    out: NDArray[np.uint8] = np.packbits(bits[:, :width], axis=1, bitorder="little")
    return out


def shares_to_bytes(shares: FieldArray) -> list[bytes]:
    """(n, c) shares -> n encodings of ``c`` 31-bit elements, packed."""
    bits = _values_to_bits(shares % np.uint64(PRIME), FIELD_BITS)
    packed = np.packbits(bits, axis=1, bitorder="little")
    return [row.tobytes() for row in packed]


def shares_from_bytes(blob: bytes, count: int, secret_bytes: int = SECRET_BYTES) -> FieldArray:
    """``count`` concatenated shares of ``secret_bytes`` secrets -> (count, c) field
    elements, ``c = chunks_for(secret_bytes)``.

    Raises:
        PayloadError: ``blob`` is not ``count`` encodings, an encoding's padding bit
            is set, or an element is not below the prime (not a canonical share).
    """
    size, used = share_nbytes(secret_bytes), chunks_for(secret_bytes) * FIELD_BITS
    if len(blob) != count * size:
        raise PayloadError(f"shares block has {len(blob)} bytes, expected {count} x {size}")
    rows = np.frombuffer(blob, dtype=np.uint8).reshape(count, size)
    bits = np.unpackbits(rows, axis=1, bitorder="little")
    if bits[:, used:].any():
        raise PayloadError("a share encoding has non-zero padding bits")
    values = _bits_to_values(bits[:, :used], FIELD_BITS)
    if np.any(values >= np.uint64(PRIME)):
        raise PayloadError("a share element is not below the field prime 2^31 - 1")
    return values


def _mulmod(a: FieldArray, b: FieldArray) -> FieldArray:
    return (a * b) % np.uint64(PRIME)


def _powmod(base: FieldArray, exponent: int) -> FieldArray:
    result = np.ones_like(base)
    square = base % np.uint64(PRIME)
    while exponent:
        if exponent & 1:
            result = _mulmod(result, square)
        square = _mulmod(square, square)
        exponent >>= 1
    return result


def _matmul_mod(v: FieldArray, c: FieldArray) -> FieldArray:
    """``(v @ c) mod p`` exactly, for entries below ``p``."""
    out = np.zeros((v.shape[0], c.shape[1]), dtype=np.uint64)
    for start in range(0, v.shape[1], _MAX_TERMS):
        vf = v[:, start : start + _MAX_TERMS].astype(np.float64)
        block = c[start : start + _MAX_TERMS]
        for limb in range(3):
            part = (block >> np.uint64(_LIMB_BITS * limb)) & np.uint64((1 << _LIMB_BITS) - 1)
            prod = (vf @ part.astype(np.float64)).astype(np.uint64) % np.uint64(PRIME)
            shift = np.uint64(pow(2, _LIMB_BITS * limb, PRIME))
            out = (out + _mulmod(prod, np.full_like(prod, shift))) % np.uint64(PRIME)
    return out


class ShamirScheme:
    """Sharing with threshold ``t`` at points ``x = 1 .. num_points``.

    Holds the public Vandermonde table (built once, shared by every party of a
    simulation; a real client builds the same table itself).
    """

    def __init__(self, num_points: int, threshold: int) -> None:
        self.num_points = num_points
        self.threshold = threshold
        xs = np.arange(1, num_points + 1, dtype=np.uint64)
        table = np.ones((num_points, threshold), dtype=np.uint64)
        for j in range(1, threshold):
            table[:, j] = _mulmod(table[:, j - 1], xs)
        self._vandermonde = table

    def share(
        self, secrets: NDArray[np.uint8], holders: NDArray[np.int64], coeffs: FieldArray
    ) -> FieldArray:
        """Shares of ``secrets`` (s, B) for the ``holders`` (x = holder + 1).

        Args:
            secrets: (s, B) secret bytes.
            holders: (k,) zero-based ids of the share holders.
            coeffs: (t - 1, s * c) uniform field elements, the random coefficients
                (``c = chunks_for(B)``).

        Returns:
            (k, s, c) shares.
        """
        constant = bytes_to_field(secrets).reshape(-1)
        shares = self.share_fields(constant, holders, coeffs)
        return shares.reshape(len(holders), secrets.shape[0], -1)

    def share_fields(
        self, constants: FieldArray, holders: NDArray[np.int64], coeffs: FieldArray
    ) -> FieldArray:
        """Shares of field elements ``constants`` (c,) for the ``holders``: (k, c).

        ``coeffs`` (t - 1, c) are the polynomials' uniform random coefficients.
        """
        c = np.concatenate([constants.reshape(1, -1), coeffs % np.uint64(PRIME)], axis=0)
        return _matmul_mod(self._vandermonde[holders], c)


def lagrange_at_zero(xs: FieldArray) -> FieldArray:
    """Lagrange coefficients at zero for each row of distinct points ``xs`` (b, t)."""
    p = np.uint64(PRIME)
    b, t = xs.shape
    num = np.ones((b, t), dtype=np.uint64)
    den = np.ones((b, t), dtype=np.uint64)
    for m in range(t):
        xm = xs[:, m : m + 1]
        diff = (xm + p - xs) % p
        diff[:, m] = 1
        other = np.broadcast_to(xm, (b, t)).copy()
        other[:, m] = 1
        num = _mulmod(num, other)
        den = _mulmod(den, diff)
    return _mulmod(num, _powmod(den, PRIME - 2))


def reconstruct(
    xs: FieldArray, shares: FieldArray, secret_bytes: int = SECRET_BYTES
) -> NDArray[np.uint8]:
    """Rebuild secrets from ``t`` shares each.

    Args:
        xs: (b, t) evaluation points (holder id + 1), distinct within a row.
        shares: (b, t, c) the holders' shares of each secret.
        secret_bytes: the secrets' size ``B`` (``c = chunks_for(B)``).

    Returns:
        (b, B) secret bytes.

    Raises:
        SecAggError: the shares are inconsistent.
    """
    return combine(lagrange_at_zero(xs), shares, secret_bytes)


def lagrange_leave_one_out(base: FieldArray) -> tuple[FieldArray, FieldArray]:
    """Coefficients at zero for ``base`` and for ``base`` minus each one point.

    Row ``j`` of the matrix holds the coefficients for ``base`` without point ``j``
    (zero in column ``j``), from ``lambda_i * (x_j - x_i) / x_j``: one ``O(s^2)``
    pass instead of ``s`` interpolations (used for the full graph, where every
    survivor's seed is rebuilt from the same responders except itself).

    Returns:
        ``(lam, rows)`` of shapes ``(s,)`` and ``(s, s)``.
    """
    p = np.uint64(PRIME)
    lam = lagrange_at_zero(base[None, :])[0]
    diff = (base[:, None] + p - base[None, :]) % p
    inv = _powmod(base, PRIME - 2)
    rows = _mulmod(_mulmod(np.broadcast_to(lam, diff.shape), diff), inv[:, None])
    return lam, rows


def combine(
    coeffs: FieldArray, shares: FieldArray, secret_bytes: int = SECRET_BYTES
) -> NDArray[np.uint8]:
    """Secrets of ``secret_bytes`` from per-secret coefficient rows (b, s) and shares
    (b, s, c).

    Raises:
        SecAggError: the shares are inconsistent.
    """
    terms = _mulmod(coeffs[:, :, None], shares)
    return field_to_bytes(terms.sum(axis=1) % np.uint64(PRIME), secret_bytes)
