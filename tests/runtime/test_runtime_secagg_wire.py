"""Secure-aggregation messages survive the wire encoding bit for bit; bad bytes are
refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import PayloadError
from fedstrata.runtime import secagg_wire as w
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.secagg import ClientProtocol, SecAggConfig, ServerProtocol
from fedstrata.secagg.messages import KeyDirectory, MaskedInput, SealedShares, UnmaskResponse


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


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(st.integers(0, 5000), st.tuples(st.binary(), st.binary()), max_size=12),
    st.integers(1, 40),
    st.integers(1, 40),
)
def test_a_key_directory_round_trips_packed(raw, enc_len, mask_len):
    keys = {v: (e.ljust(enc_len, b"e")[:enc_len], m.ljust(mask_len, b"m")[:mask_len])
            for v, (e, m) in raw.items()}  # fmt: skip
    msg = KeyDirectory(7, keys)
    data = w.encode_directory(msg)
    assert w.decode_directory(data) == msg
    # per client: its id (a varint of at most 2 bytes below 16384) and two keys of 32
    # bytes; besides them, the round (2 bytes), the packed ids' tag and length (2) and
    # the two key fields' tags and lengths (3 each)
    if len(keys) > 1 and enc_len == mask_len == 32:
        assert len(data) <= 2 + 2 + 2 * len(keys) + 64 * len(keys) + 6


def test_a_key_directory_with_keys_of_mixed_length_or_missing_bytes_is_refused():
    with pytest.raises(PayloadError, match="differ in length"):
        w.encode_directory(KeyDirectory(1, {0: (b"a" * 32, b"b" * 32), 1: (b"a", b"b" * 32)}))
    cut = pb.SecAggKeyDirectory(
        round_id=1, client_ids=[0, 1], enc_publics=b"a" * 63, mask_publics=b"b" * 64
    )
    with pytest.raises(PayloadError, match="63 key bytes for 2 clients"):
        w.decode_directory(cut.SerializeToString())
    twice = pb.SecAggKeyDirectory(
        round_id=1, client_ids=[3, 3], enc_publics=b"a" * 64, mask_publics=b"b" * 64
    )
    with pytest.raises(PayloadError, match="repeated client ids"):
        w.decode_directory(twice.SerializeToString())
