"""Shamir sharing over GF(2^31 - 1): round trips, thresholds, batched coefficients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import SecAggError
from fedstrata.secagg.shamir import (
    CHUNKS,
    PRIME,
    ShamirScheme,
    bytes_to_field,
    field_to_bytes,
    lagrange_at_zero,
    lagrange_leave_one_out,
    reconstruct,
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
    with pytest.raises(SecAggError):  # chunks land outside 24 bits w.h.p.
        reconstruct(xs, shares[:9, 0][None])


def test_bytes_field_round_trip() -> None:
    data = np.random.default_rng(0).integers(0, 256, (5, 32), dtype=np.uint8)
    np.testing.assert_array_equal(field_to_bytes(bytes_to_field(data)), data)


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
