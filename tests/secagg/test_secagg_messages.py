"""Wire sizes of the protocol's messages are the bytes the parties really produce, and
the compact encodings (implicit ids, packed shares and inputs) are refused when they
do not match what the receiver derives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedstrata.errors import ProtocolError
from fedstrata.secagg import ClientProtocol, Entropy, SecAggConfig, ServerProtocol, ShamirScheme
from fedstrata.secagg.messages import (
    CIPHERTEXT_BYTES,
    KEY_SHARE_BYTES,
    SEED_SHARE_BYTES,
    MaskedInput,
    ShareKeys,
    UnmaskRequest,
)
from fedstrata.secagg.sealing import open_sealed

N, M, BITS = 8, 40, 20
CONFIG = SecAggConfig(num_clients=N, vector_length=M, threshold=4, degree=N - 1, modulus_bits=BITS)


def _keyed(center: bytes | None = None) -> tuple[list[ClientProtocol], ServerProtocol, dict]:
    """Parties after the key step, and each client's ShareKeys (not yet delivered)."""
    entropy = Entropy(np.random.default_rng(4))
    scheme = ShamirScheme(N, CONFIG.threshold)
    clients = [
        ClientProtocol(CONFIG, c, entropy=entropy, scheme=scheme, center_public=center)
        for c in range(N)
    ]
    server = ServerProtocol(CONFIG, 2, entropy=entropy, scheme=scheme, remove_self_masks=False)
    setup = server.setup()
    for c in clients:
        server.receive_keys(c.on_setup(setup))
    shares = {cid: clients[cid].on_key_directory(d) for cid, d in server.close_keys().items()}
    return clients, server, shares


def test_share_ciphertexts_are_two_packed_shares_and_a_tag() -> None:
    _, _, shares = _keyed()
    for msg in shares.values():
        assert {len(c) for c in msg.ciphertexts.values()} == {CIPHERTEXT_BYTES}
        assert CIPHERTEXT_BYTES == SEED_SHARE_BYTES + KEY_SHARE_BYTES + 16 == 20 + 35 + 16
        assert msg.nbytes == 8 + (N - 1) * CIPHERTEXT_BYTES  # recipients: the directory


def test_share_keys_must_cover_exactly_the_directory() -> None:
    """The recipients do not travel, so a ShareKeys that skips one is refused."""
    _, server, shares = _keyed()
    partial = dict(shares[0].ciphertexts)
    partial.pop(3)
    with pytest.raises(ProtocolError, match=r"recipients \[3\] outside or missing"):
        server.receive_shares(ShareKeys(0, partial))


def test_masked_inputs_travel_packed_and_stay_in_the_ring() -> None:
    clients, server, shares = _keyed()
    for msg in shares.values():
        server.receive_shares(msg)
    for cid, bundle in server.close_shares().items():
        clients[cid].on_share_bundle(bundle)
    msg = clients[0].masked_input(np.full(M, 5, dtype=np.uint32))
    assert int(msg.vector.max()) < 1 << BITS
    assert msg.nbytes == 8 + (M * BITS + 7) // 8
    server.receive_masked_input(msg)
    wide = MaskedInput(1, 2, msg.vector | np.uint32(1 << BITS), BITS)
    with pytest.raises(ProtocolError, match="outside the 2\\^20 ring"):
        server.receive_masked_input(wide)


def test_sealed_boxes_hold_owner_ordered_seed_shares_without_ids() -> None:
    center = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    clients, server, shares = _keyed(center.public_key().public_bytes_raw())
    for msg in shares.values():
        server.receive_shares(msg)
    for cid, bundle in server.close_shares().items():
        clients[cid].on_share_bundle(bundle)
    for c in clients:
        server.receive_masked_input(c.masked_input(np.zeros(M, dtype=np.uint32)))
    survivors = frozenset({1, 2, 4, 6})
    resp = clients[0].on_unmask_request(UnmaskRequest(2, survivors, frozenset()))
    assert resp.sealed is not None
    assert len(resp.sealed.ciphertext) == len(survivors) * SEED_SHARE_BYTES + 16
    assert resp.nbytes == 8 + 4 + 32 + len(survivors) * SEED_SHARE_BYTES + 16
    opened = open_sealed(resp.sealed, center, 2, sorted(survivors))
    assert sorted(opened) == sorted(survivors)
    assert all(len(s) == SEED_SHARE_BYTES for s in opened.values())
    with pytest.raises(ProtocolError, match="expected 3 shares"):
        open_sealed(resp.sealed, center, 2, [1, 2, 4])
    with pytest.raises(ProtocolError, match="failed authentication"):
        open_sealed(dataclasses.replace(resp.sealed, client_id=5), center, 2, sorted(survivors))
