"""Messages of the secure-aggregation protocol, with their wire sizes.

One round (Bonawitz et al., CCS 2017, figure 4; SecAgg+ restricts every per-peer
list to the client's ``k`` graph neighbours):

==========  ========================  ======================  ==========================
step        client -> server          server -> client        size in bytes
==========  ========================  ======================  ==========================
0 setup     -                         :class:`RoundSetup`     16
1 keys      :class:`AdvertiseKeys`    :class:`KeyDirectory`   68 up; 8 + 68 per neighbour
2 shares    :class:`ShareKeys`        :class:`ShareBundle`    116 per neighbour each way
                                                              (+ 8 header)
3 input     :class:`MaskedInput`      :class:`UnmaskRequest`  8 + 4 m up; 8 + 4 per
                                                              listed neighbour down
4 unmask    :class:`UnmaskResponse`   -                       8 + 48 per share
                                                              (+ 36 + 16 if sealed)
==========  ========================  ======================  ==========================

``m`` is the vector length. Every message's ``nbytes`` gives its size under a
plain length-prefixed encoding (ids as uint32); the simulator charges these to
the links.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CIPHERTEXT_BYTES",
    "AdvertiseKeys",
    "KeyDirectory",
    "MaskedInput",
    "RoundSetup",
    "SealedShares",
    "ShareBundle",
    "ShareKeys",
    "UnmaskRequest",
    "UnmaskResponse",
]

_ID = 4
_HEADER = 8
_KEY = 32
CIPHERTEXT_BYTES = 112  # ids (8) + two 44-byte shares + 16-byte GCM tag
_SHARE = 44


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
    """Client -> server: encrypted shares of its seed and mask key, per neighbour."""

    client_id: int
    ciphertexts: Mapping[int, bytes]

    @property
    def nbytes(self) -> int:
        return _HEADER + sum(_ID + len(c) for c in self.ciphertexts.values())


@dataclass(frozen=True)
class ShareBundle:
    """Server -> client: ciphertexts addressed to the client, keyed by sender."""

    round_id: int
    ciphertexts: Mapping[int, bytes]

    @property
    def nbytes(self) -> int:
        return _HEADER + sum(_ID + len(c) for c in self.ciphertexts.values())


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Client -> server: the masked input vector in the uint32 ring."""

    client_id: int
    round_id: int
    vector: NDArray[np.uint32]

    @property
    def nbytes(self) -> int:
        return _HEADER + int(self.vector.nbytes)


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
        count = len(self.self_mask_shares) + len(self.key_shares)
        extra = self.sealed.nbytes if self.sealed is not None else 0
        return _HEADER + count * (_ID + _SHARE) + extra
