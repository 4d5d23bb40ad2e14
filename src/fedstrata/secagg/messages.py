"""Messages of the secure-aggregation protocol, with their wire sizes.

One round (Bonawitz et al., CCS 2017, figure 4; SecAgg+ restricts every per-peer
list to the client's ``k`` graph neighbours):

==========  ========================  ======================  ==========================
step        client -> server          server -> client        size in bytes
==========  ========================  ======================  ==========================
0 setup     -                         :class:`RoundSetup`     16
1 keys      :class:`AdvertiseKeys`    :class:`KeyDirectory`   68 up; 8 + 68 per neighbour
2 shares    :class:`ShareKeys`        :class:`ShareBundle`    71 per neighbour up, 75
                                                              down (+ 8 header)
3 input     :class:`MaskedInput`      :class:`UnmaskRequest`  8 + ceil(m b / 8) up; 8 + 4
                                                              per listed neighbour down
4 unmask    :class:`UnmaskResponse`   -                       8 + 24 per seed share, 39
                                                              per key share; sealed:
                                                              36 + 16 + 20 per seed share
==========  ========================  ======================  ==========================

``m`` is the vector length and ``b`` the ring's ``modulus_bits`` (masked inputs
travel packed at ``b`` bits, :mod:`fedstrata.secagg.bitpack`). Shamir shares are
31-bit field elements packed at 31 bits: 20 bytes for a 16-byte self-mask seed, 35
for a 32-byte mask key; a share ciphertext is the two shares plus the 16-byte GCM
tag (71 bytes: the pair's key, the nonce and the associated data bind sender and
recipient, so no id travels inside); a sealed box
holds its shares in owner order without ids (the center derives the owners from
the cluster report). Every message's ``nbytes`` gives its size under a plain
length-prefixed encoding (ids as uint32); the simulator charges these to the links.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedstrata.secagg.bitpack import packed_nbytes
from fedstrata.secagg.prg import KEY_BYTES, SEED_BYTES
from fedstrata.secagg.shamir import share_nbytes

__all__ = [
    "CIPHERTEXT_BYTES",
    "KEY_SHARE_BYTES",
    "SEED_SHARE_BYTES",
    "AdvertiseKeys",
    "KeyDirectory",
    "MaskedInput",
    "RoundSetup",
    "SealedShares",
    "ShareBundle",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskResponse",
    "masked_input_nbytes",
]

_ID = 4
_HEADER = 8
_KEY = 32
SEED_SHARE_BYTES = share_nbytes(SEED_BYTES)  # 20: five 31-bit field elements, packed
KEY_SHARE_BYTES = share_nbytes(KEY_BYTES)  # 35: nine 31-bit field elements, packed
_TAG = 16
CIPHERTEXT_BYTES = SEED_SHARE_BYTES + KEY_SHARE_BYTES + _TAG  # ids: in the nonce and AD


@dataclass(frozen=True)
class RoundSetup:
    """Server -> all: a new round and the public seed of its neighbour graph."""

    round_id: int
    graph_seed: int

    @property
    def nbytes(self) -> int:
        return 16


@dataclass(frozen=True)
class AdvertiseKeys:
    """Client -> server: the client's encryption and mask-agreement public keys."""

    client_id: int
    enc_public: bytes
    mask_public: bytes

    @property
    def nbytes(self) -> int:
        return _ID + 2 * _KEY


@dataclass(frozen=True)
class KeyDirectory:
    """Server -> client: the advertised public keys of the client's neighbours."""

    round_id: int
    keys: Mapping[int, tuple[bytes, bytes]]

    @property
    def nbytes(self) -> int:
        return _HEADER + len(self.keys) * (_ID + 2 * _KEY)


@dataclass(frozen=True)
class ShareKeys:
    """Client -> server: encrypted shares of its seed and mask key, per neighbour.

    One ciphertext for every neighbour of the client's :class:`KeyDirectory`, in
    ascending id order: the server sent that directory (and refuses a message that
    does not cover it), so the recipients' ids do not travel.
    """

    client_id: int
    ciphertexts: Mapping[int, bytes]

    @property
    def nbytes(self) -> int:
        return _HEADER + sum(len(c) for c in self.ciphertexts.values())


@dataclass(frozen=True)
class ShareBundle:
    """Server -> client: ciphertexts addressed to the client, keyed by sender."""

    round_id: int
    ciphertexts: Mapping[int, bytes]

    @property
    def nbytes(self) -> int:
        return _HEADER + sum(_ID + len(c) for c in self.ciphertexts.values())


def masked_input_nbytes(length: int, modulus_bits: int) -> int:
    """Wire size of a masked input of ``length`` elements of ``Z / 2^modulus_bits``."""
    return _HEADER + packed_nbytes(length, modulus_bits)


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Client -> server: the masked input vector, elements of ``Z / 2^modulus_bits``
    (held as uint32, reduced below ``2^modulus_bits``; packed at that width on the wire)."""

    client_id: int
    round_id: int
    vector: NDArray[np.uint32]
    modulus_bits: int = 32

    @property
    def nbytes(self) -> int:
        return masked_input_nbytes(int(self.vector.shape[0]), self.modulus_bits)


@dataclass(frozen=True)
class UnmaskRequest:
    """Server -> client: which of its neighbours survived and which dropped."""

    round_id: int
    survivors: frozenset[int]
    dropped: frozenset[int]

    @property
    def nbytes(self) -> int:
        return _HEADER + _ID * (len(self.survivors) + len(self.dropped))


@dataclass(frozen=True)
class SealedShares:
    """Self-mask shares encrypted to the center (two-tier): the edge only forwards them.

    Attributes:
        client_id: the holder that sealed them.
        ephemeral_public: the holder's one-time X25519 key for this box.
        ciphertext: AES-GCM of ``(owner id, 44-byte share)`` records.
    """

    client_id: int
    ephemeral_public: bytes
    ciphertext: bytes

    @property
    def nbytes(self) -> int:
        return _ID + _KEY + len(self.ciphertext)


@dataclass(frozen=True)
class UnmaskResponse:
    """Client -> server: self-mask shares of survivors, key shares of dropped clients.

    In two-tier mode the self-mask shares travel in ``sealed`` instead.
    """

    client_id: int
    self_mask_shares: Mapping[int, bytes]
    key_shares: Mapping[int, bytes]
    sealed: SealedShares | None = None

    @property
    def nbytes(self) -> int:
        shares = [*self.self_mask_shares.values(), *self.key_shares.values()]
        extra = self.sealed.nbytes if self.sealed is not None else 0
        return _HEADER + sum(_ID + len(s) for s in shares) + extra
