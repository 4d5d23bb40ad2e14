"""Shamir sharing over GF(2^31 - 1): round trips, thresholds, batched coefficients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import PayloadError, SecAggError
from fedstrata.secagg.shamir import (
    CHUNKS,
    PRIME,
    SHARE_BYTES,
    ShamirScheme,
    bytes_to_field,
    chunks_for,
    field_to_bytes,
    lagrange_at_zero,
    lagrange_leave_one_out,
    reconstruct,
    share_nbytes,
    shares_from_bytes,
    shares_to_bytes,
)


def _share(n: int, t: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    secrets = rng.integers(0, 256, (2, 32), dtype=np.uint8)
    holders = np.arange(n, dtype=np.int64)
    coeffs = rng.integers(0, PRIME, (t - 1, 2 * CHUNKS)).astype(np.uint64)
    return secrets, holders, ShamirScheme(n, t).share(secrets, holders, coeffs)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_t_shares_rebuild_the_secret(n: int, frac: float, seed: int) -> None:
    t = 1 + int(frac * (n - 1))
    secrets, holders, shares = _share(n, t, seed)
    pick = np.random.default_rng(seed + 1).choice(n, t, replace=False)
    xs = np.stack([holders[pick] + 1, holders[pick] + 1]).astype(np.uint64)
    got = reconstruct(xs, np.stack([shares[pick, 0], shares[pick, 1]]))
    np.testing.assert_array_equal(got, secrets)


def test_fewer_than_t_shares_do_not_rebuild_the_secret() -> None:
    _secrets, holders, shares = _share(20, 10, 3)
    xs = (holders[:9] + 1).astype(np.uint64)[None, :]
    with pytest.raises(SecAggError):  # chunks land outside their 30 (16) bits w.h.p.
        reconstruct(xs, shares[:9, 0][None])


def test_bytes_field_round_trip() -> None:
    data = np.random.default_rng(0).integers(0, 256, (5, 32), dtype=np.uint8)
    np.testing.assert_array_equal(field_to_bytes(bytes_to_field(data)), data)
    seeds = data[:, :16]
    assert bytes_to_field(seeds).shape == (5, 5)
    np.testing.assert_array_equal(field_to_bytes(bytes_to_field(seeds), 16), seeds)


def test_leave_one_out_matches_direct_interpolation() -> None:
    base = np.array([3, 8, 9, 15, 22, 31], dtype=np.uint64)
    lam, rows = lagrange_leave_one_out(base)
    np.testing.assert_array_equal(lam, lagrange_at_zero(base[None])[0])
    for j in range(len(base)):
        rest = np.delete(base, j)
        np.testing.assert_array_equal(np.delete(rows[j], j), lagrange_at_zero(rest[None])[0])
        assert rows[j, j] == 0


def test_large_threshold_uses_exact_blocked_products() -> None:
    secrets, holders, shares = _share(2100, 2060, 5)  # t above one 2^11 block
    pick = np.arange(40, 40 + 2060)
    xs = (holders[pick] + 1).astype(np.uint64)[None]
    np.testing.assert_array_equal(reconstruct(xs, shares[pick, 1][None])[0], secrets[1])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 30),
    frac=st.floats(0.0, 1.0),
    size=st.sampled_from([16, 32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_packed_shares_of_any_secret_size_round_trip_and_rebuild(
    n: int, frac: float, size: int, seed: int
) -> None:
    """Shares travel packed at 31 bits (20 bytes for a 16-byte seed, 35 for a 32-byte
    key) and any t of them, parsed back, rebuild the secret."""
    t = 1 + int(frac * (n - 1))
    rng = np.random.default_rng(seed)
    secret = rng.integers(0, 256, (1, size), dtype=np.uint8)
    constants = bytes_to_field(secret)[0]
    coeffs = rng.integers(0, PRIME, (t - 1, chunks_for(size))).astype(np.uint64)
    shares = ShamirScheme(n, t).share_fields(constants, np.arange(n), coeffs)
    blobs = shares_to_bytes(shares)
    assert {len(b) for b in blobs} == {share_nbytes(size)} == {20 if size == 16 else 35}
    pick = rng.choice(n, t, replace=False)
    parsed = shares_from_bytes(b"".join(blobs[i] for i in pick), t, size)
    np.testing.assert_array_equal(parsed, shares[pick])
    xs = (pick + 1).astype(np.uint64)[None]
    np.testing.assert_array_equal(reconstruct(xs, parsed[None], size), secret)


def test_non_canonical_share_encodings_are_refused() -> None:
    top = np.full((1, CHUNKS), PRIME - 1, dtype=np.uint64)
    (blob,) = shares_to_bytes(top)
    assert len(blob) == SHARE_BYTES == 35
    as_int = int.from_bytes(blob, "little") | 1  # element 0 becomes 2^31 - 1 = p
    with pytest.raises(PayloadError, match="below the field prime"):
        shares_from_bytes(as_int.to_bytes(35, "little"), 1)
    with pytest.raises(PayloadError, match="padding"):
        shares_from_bytes(bytes(34) + b"\x80", 1)
    with pytest.raises(PayloadError, match="expected 2 x 35"):
        shares_from_bytes(blob, 2)
