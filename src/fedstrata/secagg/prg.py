"""Key agreement, key derivation and mask expansion (AES-128-CTR as the PRG).

Masks are the AES-128-CTR keystream (zero IV) under a key derived with SHA-256
from a 32-byte seed, the round id and a label, read as little-endian uint32 ring
elements (Bonawitz et al., CCS 2017, section 4: ``PRG(s_uv)`` and ``PRG(b_u)``).
The keystream is written into a preallocated buffer and added or subtracted in
place with uint32 wraparound, so one mask costs one AES pass and one NumPy add.
"""

from __future__ import annotations

import hashlib
import secrets
import time

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from fedstrata.errors import ProtocolError

__all__ = [
    "KEY_BYTES",
    "SEED_BYTES",
    "Entropy",
    "MaskExpander",
    "PairSecrets",
    "U32Vector",
    "agree",
    "derive_key",
    "load_public_key",
    "new_private_key",
]

KEY_BYTES = 32
SEED_BYTES = 16
"""A self-mask seed: 128 bits, the security of the AES-128 key it is hashed into (and
of X25519); shorter seeds mean shorter Shamir shares on the wire."""
_ZERO_IV = bytes(16)

U32Vector = NDArray[np.uint32]


class Entropy:
    """Source of secret bytes: the OS CSPRNG, or a seeded generator for tests.

    A seeded ``numpy.random.Generator`` makes simulated rounds reproducible; it is
    NOT cryptographically secure and must not be used in a deployment.
    """

    def __init__(self, rng: np.random.Generator | None = None) -> None:
        self._rng = rng

    def bytes(self, size: int) -> bytes:
        """``size`` secret bytes."""
        if self._rng is None:
            return secrets.token_bytes(size)
        return self._rng.bytes(size)

    def uint32(self, count: int) -> NDArray[np.uint32]:
        """``count`` uniform uint32 values."""
        return np.frombuffer(self.bytes(4 * count), dtype="<u4").astype(np.uint32)


def new_private_key(entropy: Entropy) -> X25519PrivateKey:
    """A fresh X25519 private key drawn from ``entropy``."""
    return X25519PrivateKey.from_private_bytes(entropy.bytes(KEY_BYTES))


def load_public_key(raw: bytes, owner: int) -> X25519PublicKey:
    """Parse a raw 32-byte X25519 public key sent by ``owner``.

    Raises:
        ProtocolError: the bytes are not a valid public key.
    """
    if len(raw) != KEY_BYTES:
        raise ProtocolError(f"client {owner}: public key has {len(raw)} bytes, want {KEY_BYTES}")
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ProtocolError(f"client {owner}: invalid X25519 public key") from exc


def agree(private: X25519PrivateKey, public: X25519PublicKey, owner: int) -> bytes:
    """X25519 shared secret with ``public`` (owned by client ``owner``).

    Raises:
        ProtocolError: the peer key is a low-order point (all-zero secret).
    """
    try:
        return private.exchange(public)
    except ValueError as exc:
        raise ProtocolError(f"client {owner}: key agreement failed ({exc})") from exc


class PairSecrets:
    """Simulation only: each X25519 pair secret computed once for both of its ends.

    Clients ``u`` and ``v`` both derive ``DH(u, v) = DH(v, u)``. When every party
    runs in one process (the simulator), the second end takes the first end's
    result and is charged the seconds the first end measured (``owed_s``, which
    :class:`~fedstrata.secagg.simulate.PartyMeter` adds to the caller), so each
    party's reported compute is what a deployed party pays while the process does
    the exchange once. Holds secrets of many parties: never use it across trust
    boundaries (a deployment passes no memo).
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[bytes, bytes], tuple[bytes, float]] = {}
        self.owed_s = 0.0

    def agree(
        self, private: X25519PrivateKey, own_public: bytes, public: X25519PublicKey, owner: int
    ) -> bytes:
        """:func:`agree`, or the other end's result (each pair is used by two ends).

        Raises:
            ProtocolError: see :func:`agree`.
        """
        peer = public.public_bytes_raw()
        key = (own_public, peer) if own_public < peer else (peer, own_public)
        hit = self._memo.pop(key, None)
        if hit is not None:
            self.owed_s += hit[1]
            return hit[0]
        start = time.perf_counter()
        secret = agree(private, public, owner)
        self._memo[key] = (secret, time.perf_counter() - start)
        return secret

    def take_owed(self) -> float:
        """The seconds owed by the calls since the last take (then reset)."""
        owed, self.owed_s = self.owed_s, 0.0
        return owed


def derive_key(secret: bytes, round_id: int, label: bytes) -> bytes:
    """A 32-byte key for ``label`` in round ``round_id`` from a shared secret or seed."""
    return hashlib.sha256(secret + round_id.to_bytes(8, "little") + label).digest()


class MaskExpander:
    """Expands seeds into uint32 masks through preallocated buffers.

    Owns two buffers of ``4 * length`` bytes (zeros in, keystream out); not
    thread-safe, so give each thread or simulated party its own expander.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self._zeros = bytearray(4 * length)
        self._out = bytearray(4 * length + 15)
        self._view = np.frombuffer(self._out, dtype="<u4", count=length)

    def expand(self, seed: bytes, round_id: int) -> U32Vector:
        """The mask for ``seed``; the returned view is overwritten by the next call."""
        key = derive_key(seed, round_id, b"fedstrata-mask")[:16]
        encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()
        encryptor.update_into(self._zeros, self._out)
        return self._view

    def add(self, acc: U32Vector, seed: bytes, round_id: int, sign: int) -> None:
        """``acc += sign * PRG(seed)`` in place, modulo 2^32 (``sign`` is +1 or -1)."""
        mask = self.expand(seed, round_id)
        if sign > 0:
            np.add(acc, mask, out=acc)
        else:
            np.subtract(acc, mask, out=acc)
