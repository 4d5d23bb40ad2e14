"""Sealed boxes: shares encrypted to the center so the edge can only forward them.

Two-tier secure aggregation: a device's self-mask shares are encrypted under
``AES-GCM(SHA-256(X25519(ephemeral, center)))`` (an ECIES-style box); the edge that
runs the inner protocol forwards the box to the center unopened, so the edge never
rebuilds a device's self-mask seed and learns only its cluster's sum plus the
cluster mask (the sum of its survivors' self-masks).

The box holds the shares alone, in ascending owner order: the owners are the
holder's surviving neighbours, which the center derives from the edge's cluster
report (survivors and neighbour graph), so no id travels inside the box; a box
whose length does not match that list fails to open.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedstrata.errors import ProtocolError
from fedstrata.secagg.messages import SEED_SHARE_BYTES, SealedShares
from fedstrata.secagg.prg import Entropy, agree, derive_key, load_public_key, new_private_key

__all__ = ["open_sealed", "seal_shares"]

_OWNER = struct.Struct("<I")
_NONCE = bytes(12)  # each box has a fresh ephemeral key


def _label(holder: int) -> bytes:
    return b"fedstrata-seal" + _OWNER.pack(holder)


def seal_shares(
    holder: int,
    shares: Mapping[int, bytes],
    center_public: bytes,
    round_id: int,
    entropy: Entropy,
) -> SealedShares:
    """Encrypt ``{owner id: share}`` from ``holder`` to the center's public key (the
    shares in ascending owner order, without the ids)."""
    ephemeral = new_private_key(entropy)
    secret = agree(ephemeral, load_public_key(center_public, -1), -1)
    plain = b"".join(share for _, share in sorted(shares.items()))
    box = AESGCM(derive_key(secret, round_id, _label(holder))).encrypt(_NONCE, plain, None)
    return SealedShares(holder, ephemeral.public_key().public_bytes_raw(), box)


def open_sealed(
    sealed: SealedShares, center_private: X25519PrivateKey, round_id: int, owners: Sequence[int]
) -> dict[int, bytes]:
    """Decrypt a sealed box into ``{owner id: share}`` for the holder's ``owners``
    (its surviving neighbours).

    Raises:
        ProtocolError: the box fails authentication, or holds another number of
            shares than ``owners``.
    """
    holder = sealed.client_id
    secret = agree(center_private, load_public_key(sealed.ephemeral_public, holder), holder)
    try:
        plain = AESGCM(derive_key(secret, round_id, _label(holder))).decrypt(
            _NONCE, sealed.ciphertext, None
        )
    except InvalidTag:
        raise ProtocolError(f"sealed shares of client {holder} failed authentication") from None
    ordered = sorted(owners)
    if len(plain) != SEED_SHARE_BYTES * len(ordered):
        raise ProtocolError(
            f"sealed shares of client {holder} have {len(plain)} bytes, expected "
            f"{len(ordered)} shares of {SEED_SHARE_BYTES}"
        )
    return {
        owner: plain[i * SEED_SHARE_BYTES : (i + 1) * SEED_SHARE_BYTES]
        for i, owner in enumerate(ordered)
    }
