"""Batched rebuilding of many clients' secrets from the shares their holders revealed.

Bonawitz et al., CCS 2017, round 4 (server): for every survivor the self-mask
seed, for every dropped client the mask-agreement key, each from ``t`` shares.
All secrets of one kind are rebuilt in one vectorised Lagrange pass. In the full
graph every secret is rebuilt from one common responder set (minus the owner),
so the coefficients come from :func:`~fedstrata.secagg.shamir.lagrange_leave_one_out`
once per round instead of once per client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import PayloadError, SecAggError
from fedstrata.secagg.shamir import (
    SECRET_BYTES,
    FieldArray,
    combine,
    lagrange_leave_one_out,
    reconstruct,
    share_nbytes,
    shares_from_bytes,
)

__all__ = ["rebuild_secrets"]

ShareMaps = Mapping[int, Mapping[int, bytes]]  # holder -> owner -> share


def _parse(blob: bytes, rows: int, cols: int, secret_bytes: int) -> FieldArray:
    try:
        flat = shares_from_bytes(blob, rows * cols, secret_bytes)
    except PayloadError as exc:
        raise SecAggError(f"a revealed share is malformed: {exc}") from exc
    return flat.reshape(rows, cols, -1)


def _index(shares: ShareMaps) -> dict[int, list[int]]:
    """owner -> sorted holders that revealed a share of it."""
    index: dict[int, list[int]] = {}
    for holder in sorted(shares):
        for owner in shares[holder]:
            index.setdefault(owner, []).append(holder)
    return index


def _check_counts(
    owners: Sequence[int], index: Mapping[int, list[int]], threshold: int, what: str
) -> None:
    for owner in owners:
        count = len(index.get(owner, ()))
        if count < threshold:
            raise SecAggError(
                f"cannot rebuild the {what} of client {owner}: {count} shares received, "
                f"threshold {threshold}"
            )


def _rebuild_general(
    owners: Sequence[int],
    shares: ShareMaps,
    index: Mapping[int, list[int]],
    threshold: int,
    secret_bytes: int,
) -> NDArray[np.uint8]:
    picks = [index[u][:threshold] for u in owners]
    xs = np.array(picks, dtype=np.uint64) + np.uint64(1)
    blob = b"".join(shares[h][u] for u, hs in zip(owners, picks, strict=True) for h in hs)
    return reconstruct(xs, _parse(blob, len(owners), threshold, secret_bytes), secret_bytes)


def _common_base(owners: Sequence[int], shares: ShareMaps, threshold: int) -> list[int] | None:
    base = sorted(shares)[: threshold + 1]
    if len(base) < threshold + 1:
        return None
    ok = all(u in shares[h] for u in owners for h in base if h != u)
    return base if ok else None


def _rebuild_common(
    owners: Sequence[int], shares: ShareMaps, base: list[int], secret_bytes: int
) -> NDArray[np.uint8]:
    lam, rows = lagrange_leave_one_out(np.array(base, dtype=np.uint64) + np.uint64(1))
    slot = {h: j for j, h in enumerate(base)}
    coeffs = np.stack([rows[slot[u]] if u in slot else lam for u in owners])
    empty = bytes(share_nbytes(secret_bytes))  # weight 0: the owner's own slot
    blob = b"".join(shares[h].get(u, empty) if h != u else empty for u in owners for h in base)
    return combine(coeffs, _parse(blob, len(owners), len(base), secret_bytes), secret_bytes)


def rebuild_secrets(
    owners: Sequence[int],
    shares: ShareMaps,
    threshold: int,
    what: str,
    secret_bytes: int = SECRET_BYTES,
) -> dict[int, bytes]:
    """The ``secret_bytes``-byte secrets of ``owners`` from the holders' revealed shares.

    Args:
        owners: clients whose secret to rebuild.
        shares: for each responding holder, ``{owner: share}``
            (``share_nbytes(secret_bytes)`` each).
        threshold: shares needed per secret.
        what: name of the secret for error messages ("self-mask seed", ...).
        secret_bytes: the size of each secret.

    Raises:
        SecAggError: some owner has fewer than ``threshold`` shares, or the
            shares are inconsistent.
    """
    if not owners:
        return {}
    index = _index(shares)
    _check_counts(owners, index, threshold, what)
    base = _common_base(owners, shares, threshold) if threshold > 8 else None
    if base is not None:
        secrets = _rebuild_common(owners, shares, base, secret_bytes)
    else:
        secrets = _rebuild_general(owners, shares, index, threshold, secret_bytes)
    return {u: secrets[i].tobytes() for i, u in enumerate(owners)}
