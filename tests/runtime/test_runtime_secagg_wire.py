"""Secure-aggregation messages survive the wire encoding bit for bit; bad bytes are
refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import PayloadError
from fedstrata.runtime import secagg_wire as w
from fedstrata.secagg import ClientProtocol, SecAggConfig, ServerProtocol
from fedstrata.secagg.messages import MaskedInput, SealedShares, UnmaskResponse


def test_a_protocol_round_through_the_wire_encoding_sums_exactly():
    cfg = SecAggConfig.for_cohort(5, 7, 0.0, modulus_bits=20)
    server = ServerProtocol(cfg, 3)
    clients = [ClientProtocol(cfg, i) for i in range(5)]
    setup = w.decode_setup(
        w.encode_setup(w.SetupReply(server.setup(), 0, 5, cfg.degree, cfg.threshold))
    )
    for c in clients:
        server.receive_keys(w.decode_keys(w.encode_keys(c.on_setup(setup.setup))))
    for u, d in server.close_keys().items():
        shares = clients[u].on_key_directory(w.decode_directory(w.encode_directory(d)))
        server.receive_shares(w.decode_shares(w.encode_shares(shares)))
    for u, b in server.close_shares().items():
        clients[u].on_share_bundle(w.decode_bundle(w.encode_bundle(b)))
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 1 << 10, 7, dtype=np.uint32) for _ in range(4)]
    for c, x in zip(clients, inputs, strict=False):  # client 4 drops
        data = w.encode_masked(c.masked_input(x))
        server.receive_masked_input(w.decode_masked(data, 7, 20))
    for u, req in server.close_inputs().items():
        resp = clients[u].on_unmask_request(w.decode_request(w.encode_request(req)))
        server.receive_unmask(w.decode_response(w.encode_response(resp)))
    assert np.array_equal(server.finalize(), np.sum(inputs, axis=0, dtype=np.uint32))


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=0, max_size=40), st.binary(min_size=1, max_size=64))
def test_a_response_with_a_sealed_box_round_trips(eph, box):
    msg = UnmaskResponse(2, {1: b"a" * 20}, {3: b"k" * 35}, SealedShares(2, eph, box))
    assert w.decode_response(w.encode_response(msg)) == msg


def test_a_masked_input_of_the_wrong_shape_or_bytes_is_refused():
    data = w.encode_masked(MaskedInput(0, 1, np.arange(5, dtype=np.uint32), 12))
    with pytest.raises(PayloadError, match="expects 6 at 12"):
        w.decode_masked(data, 6, 12)
    with pytest.raises(PayloadError, match="not a valid SecAggMaskedInput"):
        w.decode_masked(b"\xff\xff\xff", 5, 12)
    with pytest.raises(PayloadError, match="ids for"):
        w.decode_shares(b"\x12\x01\x01\x12\x01\x02")  # two recipients, no ciphertexts
