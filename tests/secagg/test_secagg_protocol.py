"""The flat protocol: exact sums, dropouts, thresholds, late devices, refusals, uniformity."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedstrata.errors import InvalidUpdateError, ProtocolError, SecAggError
from fedstrata.secagg import (
    ClientProtocol,
    Entropy,
    MaskPool,
    SecAggConfig,
    ServerProtocol,
    ShamirScheme,
    UnmaskRequest,
    drive_round,
    simulate_round,
    simulate_round_detailed,
)

N, M = 16, 256
SPARSE = SecAggConfig(num_clients=N, vector_length=M, threshold=5, degree=8)
FULL = SecAggConfig(num_clients=N, vector_length=M, threshold=8, degree=N - 1)


@pytest.mark.parametrize("config", [SPARSE, FULL], ids=["sparse", "full"])
def test_unmasked_sum_equals_plaintext_sum(config, make_inputs, plain_sum) -> None:
    inputs = make_inputs(N, M, 0, bits=32)
    got = simulate_round(inputs, set(), config, np.random.default_rng(1))
    np.testing.assert_array_equal(got, plain_sum(inputs, set()))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_masks_cancel_for_any_dropout_set_within_threshold(data: st.DataObject) -> None:
    config = data.draw(st.sampled_from([SPARSE, FULL]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    inputs = [rng.integers(0, 2**32, M, dtype=np.uint32) for _ in range(N)]
    # with 2 drops among 8 neighbours every client keeps >= 6 > t=5 live holders
    limit = 2 if config is SPARSE else N - config.threshold - 1
    dropped = data.draw(st.sets(st.integers(0, N - 1), max_size=limit))
    got = simulate_round(inputs, dropped, config, rng)
    expect = np.zeros(M, np.uint32)
    for i in set(range(N)) - dropped:
        expect += inputs[i]
    np.testing.assert_array_equal(got, expect)


def test_recovery_below_threshold_fails_cleanly(make_inputs) -> None:
    inputs = make_inputs(N, M, 2)
    dropped = set(range(N - FULL.threshold + 1))  # t - 1 survivors
    with pytest.raises(SecAggError, match="below threshold"):
        simulate_round(inputs, dropped, FULL, np.random.default_rng(0))


def test_sparse_recovery_fails_when_a_dropped_client_loses_its_holders(make_inputs) -> None:
    rng = np.random.default_rng(0)
    server_probe = ServerProtocol(SPARSE, 0, entropy=Entropy(np.random.default_rng(5)))
    victim = 0
    dropped = {victim, *map(int, server_probe.graph.neighbours(victim)[:4])}  # 4 of 8 left < 5
    inputs = make_inputs(N, M, 3)
    with pytest.raises(SecAggError, match=r"cannot rebuild .* threshold 5"):
        _run_with_graph_seed(SPARSE, inputs, dropped, 5, rng)


def _run_with_graph_seed(config, inputs, dropped, seed, rng):
    scheme = ShamirScheme(config.num_clients, config.threshold)
    clients = [
        ClientProtocol(config, c, entropy=Entropy(rng), scheme=scheme)
        for c in range(config.num_clients)
    ]
    server = ServerProtocol(config, 0, entropy=Entropy(np.random.default_rng(seed)), scheme=scheme)
    return drive_round(clients, server, inputs, dropped)


def test_late_device_is_recovered_and_its_message_rejected(make_inputs, plain_sum) -> None:
    inputs = make_inputs(N, M, 4)
    result = simulate_round_detailed(inputs, {3}, SPARSE, np.random.default_rng(2), late={7})
    assert result.stats.late_rejected == 1
    assert 7 not in result.survivors
    np.testing.assert_array_equal(result.aggregate, plain_sum(inputs, {3, 7}))


def _client_at_unmask(config: SecAggConfig) -> tuple[ClientProtocol, list[int]]:
    """Run a round up to the unmask request and return client 0 and its peers."""
    rng = np.random.default_rng(9)
    scheme = ShamirScheme(config.num_clients, config.threshold)
    clients = [ClientProtocol(config, c, entropy=Entropy(rng), scheme=scheme) for c in range(N)]
    server = ServerProtocol(config, 0, entropy=Entropy(rng), scheme=scheme)
    setup = server.setup()
    for c in clients:
        server.receive_keys(c.on_setup(setup))
    for cid, d in server.close_keys().items():
        server.receive_shares(clients[cid].on_key_directory(d))
    for cid, b in server.close_shares().items():
        clients[cid].on_share_bundle(b)
    clients[0].masked_input(np.zeros(M, np.uint32))
    return clients[0], sorted(int(v) for v in server.graph.neighbours(0))


def test_client_refuses_to_reveal_both_shares_of_a_peer() -> None:
    client, peers = _client_at_unmask(SPARSE)
    survivors = frozenset(peers)
    with pytest.raises(ProtocolError, match="both the self-mask and the key share"):
        client.on_unmask_request(UnmaskRequest(0, survivors, frozenset({peers[0]})))


def test_client_refuses_a_second_unmask_request() -> None:
    client, peers = _client_at_unmask(SPARSE)
    client.on_unmask_request(UnmaskRequest(0, frozenset(peers[1:]), frozenset(peers[:1])))
    with pytest.raises(ProtocolError, match="phase done"):
        client.on_unmask_request(UnmaskRequest(0, frozenset(peers), frozenset()))


def test_client_aborts_when_too_few_survivors_are_listed() -> None:
    client, peers = _client_at_unmask(SPARSE)
    with pytest.raises(SecAggError, match="below threshold"):
        client.on_unmask_request(UnmaskRequest(0, frozenset(peers[:2]), frozenset(peers[2:])))


def test_out_of_order_and_malformed_messages_are_rejected() -> None:
    client = ClientProtocol(SPARSE, 0, entropy=Entropy(np.random.default_rng(0)))
    with pytest.raises(ProtocolError, match="phase new"):
        client.masked_input(np.zeros(M, np.uint32))
    server = ServerProtocol(SPARSE, 0, entropy=Entropy(np.random.default_rng(0)))
    with pytest.raises(ProtocolError, match="phase keys"):
        server.close_inputs()
    adv = client.on_setup(server.setup())
    server.receive_keys(adv)
    with pytest.raises(ProtocolError, match="repeated"):
        server.receive_keys(adv)


def test_wrong_input_dtype_is_an_invalid_update(make_inputs) -> None:
    inputs = make_inputs(N, M, 0)
    inputs[2] = inputs[2].astype(np.int64)
    with pytest.raises(InvalidUpdateError, match="uint32"):
        simulate_round(inputs, set(), SPARSE, np.random.default_rng(0))


@pytest.mark.parametrize("constant", [0, 0xDEADBEEF])
def test_server_view_of_one_client_is_uniform(constant: int) -> None:
    m = 1 << 15
    config = SecAggConfig(num_clients=8, vector_length=m, threshold=3, degree=4)
    inputs = [np.full(m, constant, np.uint32) for _ in range(8)]
    seen: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(11)
    scheme = ShamirScheme(8, 3)
    clients = [ClientProtocol(config, c, entropy=Entropy(rng), scheme=scheme) for c in range(8)]
    server = ServerProtocol(config, 0, entropy=Entropy(rng), scheme=scheme)
    drive_round(
        clients,
        server,
        inputs,
        set(),
        observe=lambda msg: seen.setdefault(msg.client_id, msg.vector.copy()),
    )
    _assert_uniform(seen[0])


def _assert_uniform(vector: np.ndarray) -> None:
    counts = np.bincount(vector.view(np.uint8), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    bits = np.unpackbits(vector.view(np.uint8)).reshape(-1, 8).mean(axis=0)
    assert np.all(np.abs(bits - 0.5) < 0.01)


def test_mask_pool_moves_work_offline_and_keeps_the_sum_exact(make_inputs, plain_sum) -> None:
    pooled = SecAggConfig(
        num_clients=N, vector_length=M, threshold=5, degree=8, precompute_masks=True
    )
    inputs = make_inputs(N, M, 6)
    result = simulate_round_detailed(inputs, {1, 9}, pooled, np.random.default_rng(3))
    np.testing.assert_array_equal(result.aggregate, plain_sum(inputs, {1, 9}))


def test_mask_pool_holds_only_ready_clients() -> None:
    pooled = SecAggConfig(
        num_clients=N, vector_length=M, threshold=5, degree=8, precompute_masks=True
    )
    pool = MaskPool(capacity=2)
    with pytest.raises(ProtocolError, match="ready"):
        pool.put(1, ClientProtocol(pooled, 0, entropy=Entropy(np.random.default_rng(0))))
    with pytest.raises(ProtocolError, match="no prepared masks"):
        pool.take(1, 0)


def test_modulus_bits_reduce_the_sum(make_inputs, plain_sum) -> None:
    cfg = SecAggConfig(
        num_clients=N, vector_length=M, threshold=5, degree=8, modulus_bits=20, input_bits=16
    )
    inputs = make_inputs(N, M, 8, bits=16)
    got = simulate_round(inputs, set(), cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(got, plain_sum(inputs, set()) & ((1 << 20) - 1))


def test_rounds_are_reproducible_from_the_rng(make_inputs) -> None:
    inputs = make_inputs(N, M, 0)
    seen: list[Callable[[], None]] = []
    a = simulate_round_detailed(inputs, {2}, SPARSE, np.random.default_rng(5))
    b = simulate_round_detailed(inputs, {2}, SPARSE, np.random.default_rng(5))
    assert not seen
    np.testing.assert_array_equal(a.aggregate, b.aggregate)
    np.testing.assert_array_equal(a.stats.bytes_up, b.stats.bytes_up)
