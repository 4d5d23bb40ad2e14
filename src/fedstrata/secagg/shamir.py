"""Vectorised Shamir secret sharing over the prime field GF(2^31 - 1).

Shamir, "How to share a secret", CACM 1979. A 32-byte secret is cut into eleven
24-bit chunks, each the constant term of its own random polynomial of degree
``t - 1``; share ``x`` is the eleven evaluations at ``x`` (44 bytes). Sharing many
secrets is one matrix product ``V @ C`` (Vandermonde rows times coefficients),
done exactly in float64 BLAS by splitting ``C`` into 11-bit limbs (every partial
sum stays below 2^53). Reconstruction is Lagrange interpolation at zero, batched
over many secrets, with modular inverses by Fermat's little theorem.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import SecAggError

__all__ = [
    "CHUNKS",
    "PRIME",
    "SHARE_BYTES",
    "FieldArray",
    "ShamirScheme",
    "bytes_to_field",
    "combine",
    "field_to_bytes",
    "lagrange_at_zero",
    "lagrange_leave_one_out",
    "reconstruct",
]

PRIME = (1 << 31) - 1
CHUNK_BYTES = 3
SECRET_BYTES = 32
CHUNKS = -(-SECRET_BYTES // CHUNK_BYTES)  # 11
SHARE_BYTES = 4 * CHUNKS  # 44
_LIMB_BITS = 11
_MAX_TERMS = 1 << 11  # keeps t * 2^31 * 2^11 < 2^53

FieldArray = NDArray[np.uint64]


def bytes_to_field(secrets: NDArray[np.uint8]) -> FieldArray:
    """(s, 32) secret bytes -> (s, 11) field elements (24-bit chunks)."""
    padded = np.zeros((secrets.shape[0], CHUNKS * CHUNK_BYTES), dtype=np.uint64)
    padded[:, :SECRET_BYTES] = secrets
    chunks = padded.reshape(secrets.shape[0], CHUNKS, CHUNK_BYTES)
    shifted: FieldArray = chunks[:, :, 0] | (chunks[:, :, 1] << np.uint64(8))
    return shifted | (chunks[:, :, 2] << np.uint64(16))


def field_to_bytes(values: FieldArray) -> NDArray[np.uint8]:
    """(s, 11) field elements -> (s, 32) secret bytes.

    Raises:
        SecAggError: a value does not fit 24 bits (inconsistent shares).
    """
    if np.any(values >= (1 << 24)):
        raise SecAggError("reconstructed secret is out of range: the shares are inconsistent")
    parts = [(values >> np.uint64(8 * i)) & np.uint64(0xFF) for i in range(CHUNK_BYTES)]
    out = np.stack(parts, axis=2).reshape(values.shape[0], CHUNKS * CHUNK_BYTES)
    return out[:, :SECRET_BYTES].astype(np.uint8)


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
        """Shares of ``secrets`` (s, 32) for the ``holders`` (x = holder + 1).

        Args:
            secrets: (s, 32) secret bytes.
            holders: (k,) zero-based ids of the share holders.
            coeffs: (t - 1, s * 11) uniform field elements, the random coefficients.

        Returns:
            (k, s, 11) shares.
        """
        constant = bytes_to_field(secrets).reshape(1, -1)
        c = np.concatenate([constant, coeffs % np.uint64(PRIME)], axis=0)
        shares = _matmul_mod(self._vandermonde[holders], c)
        return shares.reshape(len(holders), secrets.shape[0], CHUNKS)


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


def reconstruct(xs: FieldArray, shares: FieldArray) -> NDArray[np.uint8]:
    """Rebuild secrets from ``t`` shares each.

    Args:
        xs: (b, t) evaluation points (holder id + 1), distinct within a row.
        shares: (b, t, 11) the holders' shares of each secret.

    Returns:
        (b, 32) secret bytes.

    Raises:
        SecAggError: the shares are inconsistent.
    """
    return combine(lagrange_at_zero(xs), shares)


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


def combine(coeffs: FieldArray, shares: FieldArray) -> NDArray[np.uint8]:
    """Secrets from per-secret coefficient rows (b, s) and shares (b, s, 11).

    Raises:
        SecAggError: the shares are inconsistent.
    """
    terms = _mulmod(coeffs[:, :, None], shares)
    return field_to_bytes(terms.sum(axis=1) % np.uint64(PRIME))
