"""The server side of secure aggregation as a state machine without I/O.

Bonawitz et al., CCS 2017 (figure 4, semi-honest server), with the SecAgg+ graph
of Bell et al., CCS 2020. ``receive_*`` consume one client message each; the
driver calls ``close_*`` when a step's deadline passes, which fixes who is still
in the round and returns the messages to send. Masked inputs are summed in place
as they arrive (uint32 wraparound); a masked input that arrives after
:meth:`ServerProtocol.close_inputs` is rejected with
:class:`~fedstrata.errors.ProtocolError` and leaves the sum untouched, since its
sender is already being recovered as dropped.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedstrata.errors import ProtocolError, SecAggError
from fedstrata.secagg.client import check_scheme
from fedstrata.secagg.config import SecAggConfig
from fedstrata.secagg.graph import NeighbourGraph
from fedstrata.secagg.messages import (
    CIPHERTEXT_BYTES,
    KEY_SHARE_BYTES,
    SEED_SHARE_BYTES,
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    RoundSetup,
    SealedShares,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedstrata.secagg.prg import (
    KEY_BYTES,
    SEED_BYTES,
    Entropy,
    MaskExpander,
    PairSecrets,
    U32Vector,
    agree,
    load_public_key,
)
from fedstrata.secagg.recovery import rebuild_secrets
from fedstrata.secagg.shamir import ShamirScheme

__all__ = ["ServerPhase", "ServerProtocol"]

logger = logging.getLogger(__name__)


class ServerPhase(enum.Enum):
    """Which client messages the server is collecting."""

    KEYS = "keys"
    SHARES = "shares"
    INPUTS = "inputs"
    UNMASK = "unmask"
    DONE = "done"


class ServerProtocol:
    """The server's half of one secure-aggregation round.

    Args:
        config: the round's public parameters.
        round_id: the round number (part of every key derivation).
        entropy: source of the public graph seed.
        scheme: shared Shamir tables for ``(num_clients, threshold)``.
        expander: a mask expander of ``config.vector_length`` to reuse.
        remove_self_masks: ``False`` for the inner tier of two-tier aggregation:
            the result keeps the survivors' self-masks (the cluster mask), whose
            shares clients seal to the center.
        pairs: simulation only: the clients' pair-secret memo; rebuilding a
            dropped client's masks takes the secrets its neighbours already
            computed (:class:`~fedstrata.secagg.prg.PairSecrets`).

    Raises:
        ConfigError: ``scheme`` does not match ``config``.
    """

    def __init__(
        self,
        config: SecAggConfig,
        round_id: int,
        *,
        entropy: Entropy | None = None,
        scheme: ShamirScheme | None = None,
        expander: MaskExpander | None = None,
        remove_self_masks: bool = True,
        pairs: PairSecrets | None = None,
    ) -> None:
        self.config = config
        self._pairs = pairs
        self.round_id = round_id
        self.phase = ServerPhase.KEYS
        self.remove_self_masks = remove_self_masks
        self._scheme = check_scheme(config, scheme)
        self._expander = expander or MaskExpander(config.vector_length)
        seed = int.from_bytes((entropy or Entropy()).bytes(8), "little")
        self.graph = NeighbourGraph(config.num_clients, config.degree, seed)
        self._keys: dict[int, AdvertiseKeys] = {}
        self._directory: dict[int, set[int]] = {}
        self._shares: dict[int, ShareKeys] = {}
        self._inputs: set[int] = set()
        self._sum = np.zeros(config.vector_length, dtype=np.uint32)
        self._requests: dict[int, UnmaskRequest] = {}
        self._responses: dict[int, UnmaskResponse] = {}

    # -- helpers -----------------------------------------------------------------

    def _expect(self, phase: ServerPhase, what: str) -> None:
        if self.phase is not phase:
            raise ProtocolError(
                f"round {self.round_id}: {what} arrived in phase {self.phase.value}, "
                f"expected {phase.value}"
            )

    def _check_sender(self, client: int, allowed: Collection[int], what: str) -> None:
        if client not in allowed:
            raise ProtocolError(f"round {self.round_id}: {what} from unexpected client {client}")

    def _require(self, count: int, what: str) -> None:
        if count < self.config.threshold:
            raise SecAggError(
                f"round {self.round_id}: only {count} {what}, below threshold "
                f"{self.config.threshold}"
            )

    @property
    def survivors(self) -> frozenset[int]:
        """Clients whose masked input is in the sum (fixed by :meth:`close_inputs`)."""
        return frozenset(self._inputs)

    @property
    def sealed_shares(self) -> tuple[SealedShares, ...]:
        """Two-tier: the sealed self-mask shares to forward to the center."""
        return tuple(r.sealed for r in self._responses.values() if r.sealed is not None)

    # -- step 0/1: keys ----------------------------------------------------------

    def setup(self) -> RoundSetup:
        """The message that opens the round (broadcast to every client)."""
        return RoundSetup(self.round_id, self.graph.seed)

    def receive_keys(self, msg: AdvertiseKeys) -> None:
        """Record a client's public keys.

        Raises:
            ProtocolError: wrong phase, unknown or repeated client, malformed key.
        """
        self._expect(ServerPhase.KEYS, "AdvertiseKeys")
        if not 0 <= msg.client_id < self.config.num_clients or msg.client_id in self._keys:
            raise ProtocolError(
                f"round {self.round_id}: bad or repeated keys from {msg.client_id}"
            )
        load_public_key(msg.enc_public, msg.client_id)
        load_public_key(msg.mask_public, msg.client_id)
        self._keys[msg.client_id] = msg

    def close_keys(self) -> dict[int, KeyDirectory]:
        """Deadline of step 1: each advertiser gets its advertising neighbours' keys.

        Raises:
            SecAggError: fewer than ``threshold`` clients advertised keys.
        """
        self._expect(ServerPhase.KEYS, "close_keys")
        self._require(len(self._keys), "clients advertised keys")
        out: dict[int, KeyDirectory] = {}
        for u in sorted(self._keys):
            peers = [int(v) for v in self.graph.neighbours(u) if int(v) in self._keys]
            self._directory[u] = set(peers)
            keys = {v: (self._keys[v].enc_public, self._keys[v].mask_public) for v in peers}
            out[u] = KeyDirectory(self.round_id, keys)
        self.phase = ServerPhase.SHARES
        return out

    # -- step 2: shares ----------------------------------------------------------

    def receive_shares(self, msg: ShareKeys) -> None:
        """Record a client's encrypted shares (opaque to the server).

        Raises:
            ProtocolError: wrong phase, unexpected or repeated sender, recipients
                other than exactly the sender's directory (the wire format lists
                them implicitly), or a ciphertext of the wrong size.
        """
        self._expect(ServerPhase.SHARES, "ShareKeys")
        u = msg.client_id
        self._check_sender(u, self._directory, "ShareKeys")
        if u in self._shares:
            raise ProtocolError(f"round {self.round_id}: repeated ShareKeys from {u}")
        stray = set(msg.ciphertexts) ^ self._directory[u]
        bad = [v for v, c in msg.ciphertexts.items() if len(c) != CIPHERTEXT_BYTES]
        if stray or bad:
            raise ProtocolError(
                f"round {self.round_id}: ShareKeys from {u} has recipients {sorted(stray)} "
                f"outside or missing from its directory, or bad ciphertext sizes for "
                f"{sorted(bad)}"
            )
        self._shares[u] = msg

    def close_shares(self) -> dict[int, ShareBundle]:
        """Deadline of step 2: route each ciphertext to its recipient.

        Raises:
            SecAggError: fewer than ``threshold`` clients shared their keys.
        """
        self._expect(ServerPhase.SHARES, "close_shares")
        self._require(len(self._shares), "clients shared keys")
        inbox: dict[int, dict[int, bytes]] = {v: {} for v in self._shares}
        for u, msg in self._shares.items():
            for v, ciphertext in msg.ciphertexts.items():
                if v in inbox:
                    inbox[v][u] = ciphertext
        self.phase = ServerPhase.INPUTS
        return {v: ShareBundle(self.round_id, box) for v, box in sorted(inbox.items())}

    # -- step 3: masked inputs ---------------------------------------------------

    def receive_masked_input(self, msg: MaskedInput) -> None:
        """Add a masked input into the running sum.

        Raises:
            ProtocolError: the input is late (after :meth:`close_inputs`), repeated,
                from a client that did not share keys, or of the wrong shape; the
                sum is left unchanged.
        """
        if self.phase in (ServerPhase.UNMASK, ServerPhase.DONE):
            raise ProtocolError(
                f"round {self.round_id}: late masked input from client {msg.client_id} "
                "rejected; it is recovered as dropped"
            )
        self._expect(ServerPhase.INPUTS, "MaskedInput")
        u = msg.client_id
        self._check_sender(u, self._shares, "MaskedInput")
        m = self.config.vector_length
        if u in self._inputs or msg.round_id != self.round_id:
            raise ProtocolError(f"round {self.round_id}: repeated or stale input from {u}")
        if msg.vector.dtype != np.uint32 or msg.vector.shape != (m,):
            raise ProtocolError(
                f"round {self.round_id}: input from {u} is {msg.vector.dtype} "
                f"{msg.vector.shape}, want uint32 ({m},)"
            )
        bits = self.config.modulus_bits
        if bits < 32 and int(msg.vector.max()) >> bits:
            raise ProtocolError(
                f"round {self.round_id}: input from {u} has elements outside the "
                f"2^{bits} ring (not a packed {bits}-bit vector)"
            )
        np.add(self._sum, msg.vector, out=self._sum)
        self._inputs.add(u)

    def close_inputs(self) -> dict[int, UnmaskRequest]:
        """Deadline of step 3: fix the survivors; ask each for its neighbours' shares.

        The round is refused here, before any client reveals a share, unless
        every secret the unmasking needs (each survivor's self-mask seed, the mask
        key of each dropped client with a surviving neighbour) has ``threshold``
        holders among the survivors other than its owner. A client holds no share
        of its own secrets, so the full graph needs ``threshold + 1`` inputs.

        Raises:
            SecAggError: fewer than ``threshold`` masked inputs arrived, or some
                secret has fewer than ``threshold`` surviving holders.
        """
        self._expect(ServerPhase.INPUTS, "close_inputs")
        self._require(len(self._inputs), "masked inputs arrived")
        dropped = set(self._shares) - self._inputs
        for u in sorted(self._inputs):
            peers = {int(v) for v in self.graph.neighbours(u)} & set(self._shares)
            self._requests[u] = UnmaskRequest(
                self.round_id, frozenset(peers & self._inputs), frozenset(peers & dropped)
            )
        try:
            self._check_recoverable()
        except SecAggError:
            self._requests.clear()
            raise
        if dropped:  # expected: the round's summary warns once about unused updates
            logger.info("round %d: %d clients dropped before input", self.round_id, len(dropped))
        self.phase = ServerPhase.UNMASK
        return dict(self._requests)

    def _check_recoverable(self) -> None:
        needed = [(u, "self-mask seed") for u in sorted(self._inputs)]
        lost = sorted(set().union(*(r.dropped for r in self._requests.values())))
        needed += [(v, "mask key") for v in lost]
        t = self.config.threshold
        for owner, what in needed:
            holders = (set(self._shares[owner].ciphertexts) & self._inputs) - {owner}
            if len(holders) < t:
                raise SecAggError(
                    f"round {self.round_id}: cannot rebuild the {what} of client {owner}: "
                    f"{len(holders)} surviving holders, threshold {t}; refusing the round "
                    "before any share is revealed"
                )

    # -- step 4: unmasking -------------------------------------------------------

    def receive_unmask(self, msg: UnmaskResponse) -> None:
        """Record a survivor's revealed shares.

        Raises:
            ProtocolError: wrong phase, unexpected or repeated sender, or shares
                that do not answer the request.
        """
        self._expect(ServerPhase.UNMASK, "UnmaskResponse")
        u = msg.client_id
        self._check_sender(u, self._requests, "UnmaskResponse")
        req = self._requests[u]
        ok = (
            u not in self._responses
            and set(msg.self_mask_shares) <= req.survivors
            and set(msg.key_shares) <= req.dropped
            and all(len(s) == SEED_SHARE_BYTES for s in msg.self_mask_shares.values())
            and all(len(s) == KEY_SHARE_BYTES for s in msg.key_shares.values())
        )
        if not ok:
            raise ProtocolError(f"round {self.round_id}: malformed or repeated response from {u}")
        self._responses[u] = msg

    def finalize(self) -> U32Vector:
        """Remove the masks and return the sum of the survivors' inputs.

        Every secret is rebuilt before the sum is touched, and the masks are
        removed from a copy: a refused call leaves the round in the unmask phase
        with the sum intact, so more responses can arrive and ``finalize`` can be
        called again. With ``remove_self_masks=False`` the survivors' self-masks
        stay in the result (the two-tier cluster mask) and the result is not
        reduced below 2^32.

        Raises:
            SecAggError: some secret has fewer than ``threshold`` revealed shares
                (the round stays open).
        """
        self._expect(ServerPhase.UNMASK, "finalize")
        seeds = self._rebuild_seeds()
        keys = self._rebuild_dropped_keys()
        result = self._sum.copy()
        for seed in seeds.values():
            self._expander.add(result, seed, self.round_id, -1)
        self._remove_dropped_masks(result, keys)
        self.phase = ServerPhase.DONE
        logger.info(
            "round %d: unmasked the sum of %d clients (%d responded to unmasking)",
            self.round_id,
            len(self._inputs),
            len(self._responses),
        )
        if self.remove_self_masks and self.config.modulus_bits < 32:
            result &= np.uint32((1 << self.config.modulus_bits) - 1)
        return result

    def _rebuild_seeds(self) -> dict[int, bytes]:
        if not self.remove_self_masks:
            return {}
        shares = {u: r.self_mask_shares for u, r in self._responses.items()}
        return rebuild_secrets(
            sorted(self._inputs), shares, self.config.threshold, "self-mask seed", SEED_BYTES
        )

    def _rebuild_dropped_keys(self) -> dict[int, bytes]:
        dropped = sorted(set().union(*(r.dropped for r in self._requests.values())))
        shares = {u: r.key_shares for u, r in self._responses.items()}
        return rebuild_secrets(dropped, shares, self.config.threshold, "mask key", KEY_BYTES)

    def _remove_dropped_masks(self, total: U32Vector, keys: dict[int, bytes]) -> None:
        for v, raw in keys.items():
            private = X25519PrivateKey.from_private_bytes(raw)
            for u in sorted(self._inputs & self._directory[v]):
                public = load_public_key(self._keys[u].mask_public, u)
                if self._pairs is None:
                    secret = agree(private, public, u)
                else:
                    own = self._keys[v].mask_public
                    secret = self._pairs.agree(private, own, public, u)
                self._expander.add(total, secret, self.round_id, 1 if u > v else -1)
