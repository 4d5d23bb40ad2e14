"""The client side of secure aggregation as a state machine without I/O.

Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
Learning", CCS 2017 (semi-honest variant, figure 4), with the SecAgg+ neighbour
graph of Bell et al., CCS 2020. Each ``on_*`` method consumes one server message
and returns the client's reply; a driver (simulator or runtime) moves the bytes.
A client that has revealed a neighbour's self-mask share never reveals that
neighbour's key share, and vice versa: a server asking for both gets
:class:`~fedstrata.errors.ProtocolError`.
"""

from __future__ import annotations

import enum
import logging
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedstrata.errors import ConfigError, InvalidUpdateError, ProtocolError, SecAggError
from fedstrata.secagg.config import SecAggConfig
from fedstrata.secagg.graph import NeighbourGraph
from fedstrata.secagg.messages import (
    KEY_SHARE_BYTES,
    SEED_SHARE_BYTES,
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    RoundSetup,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedstrata.secagg.prg import (
    SEED_BYTES,
    Entropy,
    MaskExpander,
    PairSecrets,
    U32Vector,
    agree,
    derive_key,
    load_public_key,
    new_private_key,
)
from fedstrata.secagg.sealing import seal_shares
from fedstrata.secagg.shamir import PRIME, ShamirScheme, bytes_to_field, shares_to_bytes

__all__ = ["ClientPhase", "ClientProtocol", "check_scheme", "share_nonce"]

logger = logging.getLogger(__name__)
_PAIR = struct.Struct("<II")


class ClientPhase(enum.Enum):
    """Where a client is in the round."""

    NEW = "new"
    KEYS_SENT = "keys_sent"
    SHARES_SENT = "shares_sent"
    READY = "ready"  # share bundle received; masks may be precomputed
    INPUT_SENT = "input_sent"
    DONE = "done"


def check_scheme(config: SecAggConfig, scheme: ShamirScheme | None) -> ShamirScheme:
    """``scheme`` if it matches ``config`` (a new one if ``None``).

    Raises:
        ConfigError: the scheme was built for another cohort size or threshold.
    """
    if scheme is None:
        return ShamirScheme(config.num_clients, config.threshold)
    if (scheme.num_points, scheme.threshold) != (config.num_clients, config.threshold):
        raise ConfigError(
            f"scheme is for (n={scheme.num_points}, t={scheme.threshold}), config has "
            f"(n={config.num_clients}, t={config.threshold})"
        )
    return scheme


def share_nonce(sender: int, recipient: int) -> bytes:
    """The AES-GCM nonce of the share ciphertext from ``sender`` to ``recipient``.

    The key is the pair's (agreed this round) and the nonce and associated data
    name the direction, so a ciphertext opens only as the share ``sender`` sent to
    ``recipient``: the ids need not travel inside it.
    """
    return _PAIR.pack(sender, recipient) + bytes(4)


class ClientProtocol:
    """One client's half of one secure-aggregation round.

    Args:
        config: the round's public parameters.
        client_id: this client's id in ``0 .. num_clients - 1``.
        entropy: source of secrets (OS CSPRNG by default).
        scheme: shared Shamir tables for ``(num_clients, threshold)``.
        expander: a mask expander of ``config.vector_length`` to reuse.
        center_public: two-tier mode: self-mask shares are sealed to this X25519
            key (the center's) so the inner server (the edge) cannot read them.
        pairs: simulation only: a memo that computes each pair secret once for
            both ends (:class:`~fedstrata.secagg.prg.PairSecrets`).

    Raises:
        ConfigError: ``client_id`` or ``scheme`` do not match ``config``.
    """

    def __init__(
        self,
        config: SecAggConfig,
        client_id: int,
        *,
        entropy: Entropy | None = None,
        scheme: ShamirScheme | None = None,
        expander: MaskExpander | None = None,
        center_public: bytes | None = None,
        pairs: PairSecrets | None = None,
    ) -> None:
        if not 0 <= client_id < config.num_clients:
            raise ConfigError(
                f"client_id must be in [0, {config.num_clients - 1}], got {client_id}"
            )
        self.config = config
        self.client_id = client_id
        self.phase = ClientPhase.NEW
        self._entropy = entropy or Entropy()
        self._scheme = check_scheme(config, scheme)
        self._expander = expander or MaskExpander(config.vector_length)
        self._center_public = center_public
        self._enc_key = new_private_key(self._entropy)
        self._mask_key = new_private_key(self._entropy)
        self._publics = (b"", b"")  # set in on_setup
        self._pairs = pairs
        self._seed = self._entropy.bytes(SEED_BYTES)
        self._round_id = 0
        self._graph: NeighbourGraph | None = None
        self._directory: dict[int, tuple[X25519PublicKey, X25519PublicKey]] = {}
        self._held: dict[int, bytes] = {}
        self._mask_peers: list[int] = []
        self._mask: U32Vector | None = None
        self._aeads: dict[int, AESGCM] = {}

    def _expect(self, phase: ClientPhase, step: str) -> None:
        if self.phase is not phase:
            raise ProtocolError(
                f"client {self.client_id}: {step} arrived in phase {self.phase.value}, "
                f"expected {phase.value}"
            )

    def _check_round(self, round_id: int) -> None:
        if round_id != self._round_id:
            raise ProtocolError(
                f"client {self.client_id}: message for round {round_id}, in round {self._round_id}"
            )

    def _require(self, count: int, what: str) -> None:
        if count < self.config.threshold:
            raise SecAggError(
                f"client {self.client_id}: only {count} {what}, below threshold "
                f"{self.config.threshold}; aborting the round"
            )

    def on_setup(self, msg: RoundSetup) -> AdvertiseKeys:
        """Step 0 -> 1: learn the round and graph, advertise two public keys."""
        self._expect(ClientPhase.NEW, "RoundSetup")
        self._round_id = msg.round_id
        self._graph = NeighbourGraph(self.config.num_clients, self.config.degree, msg.graph_seed)
        self.phase = ClientPhase.KEYS_SENT
        self._publics = (
            self._enc_key.public_key().public_bytes_raw(),
            self._mask_key.public_key().public_bytes_raw(),
        )
        return AdvertiseKeys(self.client_id, *self._publics)

    def on_key_directory(self, msg: KeyDirectory) -> ShareKeys:
        """Step 1 -> 2: Shamir-share the self-mask seed and mask key to the neighbours.

        Raises:
            ProtocolError: the directory lists a non-neighbour or a bad key.
            SecAggError: fewer than ``threshold`` neighbours advertised keys.
        """
        self._expect(ClientPhase.KEYS_SENT, "KeyDirectory")
        self._check_round(msg.round_id)
        assert self._graph is not None  # set in on_setup
        for peer, (enc_raw, mask_raw) in sorted(msg.keys.items()):
            if not self._graph.are_neighbours(self.client_id, peer):
                raise ProtocolError(
                    f"client {self.client_id}: directory lists non-neighbour {peer}"
                )
            self._directory[peer] = (
                load_public_key(enc_raw, peer),
                load_public_key(mask_raw, peer),
            )
        self._require(len(self._directory), "neighbours advertised keys")
        holders = np.fromiter(self._directory, dtype=np.int64)
        shares = self._share_secrets(holders)
        ciphertexts = {
            int(peer): self._aead(int(peer)).encrypt(
                share_nonce(self.client_id, int(peer)),
                shares[i],
                _PAIR.pack(self.client_id, int(peer)),
            )
            for i, peer in enumerate(holders)
        }
        self.phase = ClientPhase.SHARES_SENT
        return ShareKeys(self.client_id, ciphertexts)

    def _share_secrets(self, holders: np.ndarray) -> list[bytes]:
        """Per holder, its seed share then its mask-key share (packed field elements)."""
        seed = bytes_to_field(np.frombuffer(self._seed, dtype=np.uint8)[None])[0]
        key = np.frombuffer(self._mask_key.private_bytes_raw(), dtype=np.uint8)
        constants = np.concatenate([seed, bytes_to_field(key[None])[0]])
        t, c = self.config.threshold, constants.shape[0]
        coeffs = self._entropy.uint32((t - 1) * c).astype(np.uint64) % np.uint64(PRIME)
        shares = self._scheme.share_fields(constants, holders, coeffs.reshape(t - 1, c))
        seeds = shares_to_bytes(shares[:, : seed.shape[0]])
        keys = shares_to_bytes(shares[:, seed.shape[0] :])
        return [s + k for s, k in zip(seeds, keys, strict=True)]

    def _agree(self, which: int, peer: int) -> bytes:
        """The X25519 secret with ``peer`` under key 0 (share channel) or 1 (mask)."""
        private = self._enc_key if which == 0 else self._mask_key
        public = self._directory[peer][which]
        if self._pairs is None:
            return agree(private, public, peer)
        return self._pairs.agree(private, self._publics[which], public, peer)

    def _aead(self, peer: int) -> AESGCM:
        """The share channel with ``peer``, agreed once per round (sealing and opening
        use the same X25519 secret; the direction is in the nonce)."""
        aead = self._aeads.get(peer)
        if aead is None:
            secret = self._agree(0, peer)
            aead = AESGCM(derive_key(secret, self._round_id, b"fedstrata-share"))
            self._aeads[peer] = aead
        return aead

    def on_share_bundle(self, msg: ShareBundle) -> None:
        """Step 2 -> 3: store the shares addressed to this client.

        With ``config.precompute_masks`` the whole mask is agreed and expanded now
        (the mask pool), so :meth:`masked_input` only adds.

        Raises:
            ProtocolError: a ciphertext fails authentication or names other parties.
            SecAggError: fewer than ``threshold`` neighbours sent shares.
        """
        self._expect(ClientPhase.SHARES_SENT, "ShareBundle")
        self._check_round(msg.round_id)
        for sender, ciphertext in sorted(msg.ciphertexts.items()):
            if sender not in self._directory:
                raise ProtocolError(f"client {self.client_id}: share from non-neighbour {sender}")
            self._held[sender] = self._open_share(sender, ciphertext)
        self._require(len(self._held), "neighbours sent shares")
        self._mask_peers = sorted(self._held)
        self.phase = ClientPhase.READY
        if self.config.precompute_masks:
            self._mask = self._build_mask()

    def _open_share(self, sender: int, ciphertext: bytes) -> bytes:
        try:
            plain = self._aead(sender).decrypt(
                share_nonce(sender, self.client_id), ciphertext, _PAIR.pack(sender, self.client_id)
            )
        except InvalidTag:
            raise ProtocolError(
                f"client {self.client_id}: share ciphertext from {sender} failed authentication"
            ) from None
        if len(plain) != SEED_SHARE_BYTES + KEY_SHARE_BYTES:
            raise ProtocolError(f"client {self.client_id}: malformed share from {sender}")
        return plain

    def _build_mask(self) -> U32Vector:
        mask = self._expander.expand(self._seed, self._round_id).copy()
        for peer in self._mask_peers:
            secret = self._agree(1, peer)
            self._expander.add(mask, secret, self._round_id, 1 if self.client_id < peer else -1)
        return mask

    def masked_input(self, vector: U32Vector) -> MaskedInput:
        """Step 3: mask ``vector`` (uint32 ring elements) and return it for the server.

        Raises:
            InvalidUpdateError: ``vector`` is not a uint32 vector of ``vector_length``.
            ProtocolError: called out of order.
        """
        self._expect(ClientPhase.READY, "masked_input")
        m = self.config.vector_length
        if vector.dtype != np.uint32 or vector.shape != (m,):
            raise InvalidUpdateError(
                self.client_id,
                f"secagg input must be uint32 of shape ({m},), got {vector.dtype} {vector.shape}",
            )
        mask = self._mask if self._mask is not None else self._build_mask()
        np.add(mask, vector, out=mask)
        bits = self.config.modulus_bits
        if bits < 32:  # the ring is Z / 2^bits: only the low bits travel
            mask &= np.uint32((1 << bits) - 1)
        self._mask = None
        self.phase = ClientPhase.INPUT_SENT
        return MaskedInput(self.client_id, self._round_id, mask, bits)

    def on_unmask_request(self, msg: UnmaskRequest) -> UnmaskResponse:
        """Step 4: reveal self-mask shares of survivors and key shares of dropped peers.

        Raises:
            ProtocolError: a peer is listed both as survivor and dropped (the attack
                that would reveal a client's input), a listed peer sent no shares,
                or a second request arrives.
            SecAggError: fewer than ``threshold`` surviving neighbours are listed
                (this client's self-mask seed could not be rebuilt).
        """
        self._expect(ClientPhase.INPUT_SENT, "UnmaskRequest")
        self._check_round(msg.round_id)
        both = msg.survivors & msg.dropped
        if both:
            raise ProtocolError(
                f"client {self.client_id}: server asked for both the self-mask and the key "
                f"share of {sorted(both)}; refusing"
            )
        unknown = (msg.survivors | msg.dropped) - set(self._held)
        if unknown:
            raise ProtocolError(f"client {self.client_id}: no shares held for {sorted(unknown)}")
        # this client's seed is rebuilt from its surviving neighbours' shares only
        self._require(len(msg.survivors), "surviving neighbours listed")
        self.phase = ClientPhase.DONE
        seeds = {v: self._held[v][:SEED_SHARE_BYTES] for v in sorted(msg.survivors)}
        keys = {v: self._held[v][SEED_SHARE_BYTES:] for v in sorted(msg.dropped)}
        if self._center_public is None:
            return UnmaskResponse(self.client_id, seeds, keys)
        sealed = seal_shares(
            self.client_id, seeds, self._center_public, self._round_id, self._entropy
        )
        return UnmaskResponse(self.client_id, {}, keys, sealed)
