"""Issue 12 part 4: secure aggregation at every tier of a tree (TreeSecAgg).

The secure total equals the plain ring sum of exactly the surviving clients under
the edges that arrived; each edge's value is its cluster sum only after the
cluster mask is removed; malformed payloads are rejected without touching a sum;
failures name the edge and the counts.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from fedstrata.compress import randk_support
from fedstrata.core import Payload, RoundContext
from fedstrata.errors import (
    AggregationError,
    ConfigError,
    InvalidUpdateError,
    PayloadError,
    SecAggError,
)
from fedstrata.secagg import (
    MaskExpander,
    RingCodec,
    RingSpec,
    SecAggConfig,
    TreeSecAgg,
    TreeSecAggOptions,
    fit_modulus,
    lift,
    remove_cluster_masks,
    simulate_round_detailed,
)
from fedstrata.secagg.codec import ring_bits
from fedstrata.secagg.prg import PairSecrets, agree

SIZE = 12
ROOT = 3


def _codec(density: float = 1.0, size: int = SIZE) -> RingCodec:
    return RingCodec(RingSpec(clip=1.0, input_bits=12, density=density), size, randk_support)


def _tree(codec: RingCodec, *, secure: bool = True, max_weight: int = 3) -> TreeSecAgg:
    opts = TreeSecAggOptions(
        max_weight=max_weight, sparse_graph=False, root_seed=ROOT, secure=secure
    )
    return TreeSecAgg(codec, opts)


def _payload(codec: RingCodec, cid: int, round_idx: int = 0, seed: int = 0) -> Payload:
    x = np.random.default_rng(seed * 1000 + cid).uniform(-1, 1, codec.size).astype(np.float32)
    return codec.encode(x, RoundContext(round_idx, ROOT).for_client(cid))


def _ring_input(codec: RingCodec, payload: Payload, weight: int) -> np.ndarray:
    """The reference ``[w q, w]`` in int64, computed apart from the component."""
    q = np.frombuffer(payload.body, dtype="<u4").astype(np.int64)
    return np.append(q * weight, weight)


def _clusters(sizes: list[int]) -> dict[str, list[int]]:
    out, start = {}, 0
    for e, n in enumerate(sizes):
        out[f"edge{e}"] = list(range(start, start + n))
        start += n
    return out


@st.composite
def _rounds(draw: st.DrawFn) -> tuple[list[int], list[set[int]], set[int], bool, float]:
    sizes = draw(st.lists(st.integers(3, 6), min_size=1, max_size=4))
    drops = [draw(st.sets(st.integers(0, n - 1), max_size=n)) for n in sizes]
    failed = draw(st.sets(st.integers(0, len(sizes) - 1), max_size=len(sizes)))
    return sizes, drops, failed, draw(st.booleans()), draw(st.sampled_from([1.0, 0.5]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rounds(), st.integers(0, 2**16))
def test_secure_total_is_the_plain_sum_of_the_survivors_at_every_tier(
    case: tuple[list[int], list[set[int]], set[int], bool, float], seed: int
) -> None:
    """Issue 12 part 4: exact sums at the edge and the center for any tree and dropouts."""
    sizes, drops, failed, with_regions, density = case
    codec = _codec(density)
    tree = _tree(codec)
    clusters = _clusters(sizes)
    regions = {e: f"r{i % 2}" for i, e in enumerate(clusters)} if with_regions else None
    rnd = tree.start_round(0, clusters, regions)
    rng = np.random.default_rng(seed)
    expect = np.zeros(codec.count + 1, dtype=np.int64)
    arrived = 0
    for e, (name, ids) in enumerate(clusters.items()):
        edge_sum = np.zeros_like(expect)
        for local, cid in enumerate(ids):
            if local in drops[e]:
                continue
            w = int(rng.integers(1, 4))
            payload = _payload(codec, cid, seed=seed)
            rnd.fold(name, codec, payload, w, client_id=cid)
            edge_sum += _ring_input(codec, payload, w)
        threshold = tree.protocol_config(len(ids))[0].threshold
        survivors = len(ids) - len(drops[e])
        if survivors < threshold + 1:  # full graph: t holders besides the owner
            with pytest.raises(SecAggError, match=rf"edge '{name}': {survivors} of {len(ids)}"):
                rnd.close_edge(name)
            continue
        outcome = rnd.close_edge(name)
        assert outcome.survivors == {cid for i, cid in enumerate(ids) if i not in drops[e]}
        # edge tier: the edge's value is its cluster sum once B_e is removed
        assert outcome.report is not None
        unmasked = outcome.value.copy()
        remove_cluster_masks(unmasked, [outcome.report], rnd.center_key, MaskExpander(len(expect)))
        np.testing.assert_array_equal(unmasked, edge_sum.astype(np.uint32))
        if e in failed:
            rnd.fail_edge(name, "lost on the way to the center")
        else:
            expect += edge_sum
            arrived += 1
    outer = tree.protocol_config(len(sizes))[0].threshold if len(sizes) > 1 else 0
    if arrived == 0 or (len(sizes) > 1 and arrived < outer + 1):
        with pytest.raises(SecAggError):
            rnd.finalize()
        return
    result = rnd.finalize()
    np.testing.assert_array_equal(result.ring_total, expect.astype(np.uint32))
    assert result.total_weight == expect[-1]
    real = lift(result.ring_total, 32)[:-1] / (codec.spec.scale * expect[-1])
    np.testing.assert_allclose(
        result.mean, codec.to_dense(real, codec.support_seed(ROOT, 0)), rtol=1e-6
    )
    assert set(result.survivors) | set(result.failed_edges) == set(clusters)


def _uniform(vector: np.ndarray) -> bool:
    counts = np.bincount(vector.view(np.uint8), minlength=256)
    return bool(stats.chisquare(counts).pvalue > 1e-4)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(3, 5), min_size=1, max_size=3),
    st.sampled_from([1, -1]),
    st.integers(1, 3000),
)
def test_a_fitted_packed_ring_holds_the_worst_case_sum_at_every_tier(
    sizes: list[int], sign: int, noise_bound: int
) -> None:
    """Issue 12 part 4: on the narrowest ring ``fit_modulus`` derives (packed at that
    width), every client at the extreme ``sign * (L + noise_bound)`` with the largest
    weight sums exactly through the edges and the center; one bit less would wrap."""
    n, weight = sum(sizes), 2
    spec = fit_modulus(
        RingSpec(clip=1.0, input_bits=8, stochastic=False, noise_bound=noise_bound), n * weight
    )
    assert spec.modulus_bits == ring_bits(n * weight, spec.bound) < 32
    assert n * weight * spec.bound > 2 ** (spec.modulus_bits - 2) - 1  # minimal width

    def extreme_noise(round_idx: int, count: int, rng: np.random.Generator) -> np.ndarray:
        return np.full(count, sign * 10**9, dtype=np.int64)  # clipped to the noise bound

    codec = RingCodec(spec, SIZE, noise_fn=extreme_noise)
    rnd = _tree(codec, max_weight=weight).start_round(0, _clusters(sizes))
    for name, ids in _clusters(sizes).items():
        for cid in ids:
            x = np.full(SIZE, 5.0 * sign, dtype=np.float32)  # clipped to +-L
            payload = codec.encode(x, RoundContext(0, ROOT).for_client(cid))
            assert len(payload.body) == (SIZE * spec.modulus_bits + 7) // 8
            rnd.fold(name, codec, payload, weight, client_id=cid)
        rnd.close_edge(name)
    result = rnd.finalize()
    lifted = lift(result.ring_total, spec.modulus_bits)
    np.testing.assert_array_equal(lifted[:-1], np.full(SIZE, sign * n * weight * spec.bound))
    assert lifted[-1] == result.total_weight == n * weight


def test_an_edge_holds_only_a_masked_value_of_its_cluster() -> None:
    """Issue 12 part 4: S_e + B_e looks uniform; removing B_e gives S_e exactly."""
    codec = _codec(size=4096)
    tree = _tree(codec)
    rnd = tree.start_round(0, _clusters([5, 5]))
    zero = codec.encode(np.zeros(4096, np.float32), RoundContext(0, ROOT).for_client(0))
    for name, ids in _clusters([5, 5]).items():
        for cid in ids[:4]:  # one dropout per edge
            rnd.fold(name, codec, zero, 1, client_id=cid)
    outcomes = [rnd.close_edge(name) for name in ("edge0", "edge1")]
    for outcome in outcomes:
        assert _uniform(outcome.value[:-1])  # S_e is all zeros: the edge sees only B_e
        assert outcome.report is not None
        value = outcome.value.copy()
        remove_cluster_masks(value, [outcome.report], rnd.center_key, MaskExpander(4097))
        assert not value[:-1].any()
        assert value[-1] == 4
    # the center's outer view of an edge is masked again by the outer protocol
    result = rnd.finalize()
    assert not result.mean.any()
    assert result.total_weight == 8


def test_malformed_payloads_are_rejected_and_leave_the_sums_intact() -> None:
    """Issue 12 part 4: PayloadError before masking; the sum is that of the good ones."""
    codec = _codec()
    tree = _tree(codec)
    rnd = tree.start_round(0, _clusters([4]))
    good = {cid: _payload(codec, cid) for cid in range(4)}
    body = bytearray(good[0].body)
    body[:4] = (5000).to_bytes(4, "little")  # |q| = 5000 > L = 2047
    bad = {
        "short body": dataclasses.replace(good[0], body=good[0].body[:-4]),
        "out of range": dataclasses.replace(good[0], body=bytes(body)),
        "other round": _payload(codec, 0, round_idx=1),
        "bad params": dataclasses.replace(good[0], params=good[0].params[:-1]),
    }
    for payload in bad.values():
        with pytest.raises(PayloadError):
            rnd.fold("edge0", codec, payload, 1, client_id=0)
    with pytest.raises(AggregationError, match="RingCodec"):
        rnd.fold("edge0", _codec(size=SIZE + 1), good[0], 1, client_id=0)
    with pytest.raises(InvalidUpdateError):
        rnd.fold("edge0", codec, good[0], 1.5, client_id=0)
    for cid, payload in good.items():
        rnd.fold("edge0", codec, payload, 2, client_id=cid)
    with pytest.raises(AggregationError, match="already folded"):
        rnd.fold("edge0", codec, good[0], 1, client_id=0)
    with pytest.raises(AggregationError, match="not selected"):
        rnd.fold("edge0", codec, good[0], 1, client_id=99)
    rnd.close_edge("edge0")
    with pytest.raises(AggregationError, match="already closed"):
        rnd.fold("edge0", codec, good[1], 1, client_id=1)
    expect = sum(_ring_input(codec, p, 2) for p in good.values())
    np.testing.assert_array_equal(rnd.finalize().ring_total, np.asarray(expect).astype(np.uint32))


def test_payloads_must_share_one_random_k_support() -> None:
    codec = _codec(0.5)
    rnd = _tree(codec).start_round(0, _clusters([3]))
    rnd.fold("edge0", codec, _payload(codec, 0), 1, client_id=0)
    other = codec.encode(np.zeros(SIZE, np.float32), RoundContext(0, ROOT + 1).for_client(1))
    with pytest.raises(PayloadError, match="support seed"):
        rnd.fold("edge0", codec, other, 1, client_id=1)


def test_clear_errors_for_bad_trees_and_failed_rounds() -> None:
    """Issue 12 part 4: each refusal names what is wrong."""
    codec = _codec()
    tree = _tree(codec)
    with pytest.raises(ConfigError, match="at least one edge"):
        tree.start_round(0, {})
    with pytest.raises(ConfigError, match="'a': needs >= 2"):
        tree.start_round(0, {"a": [1]})
    with pytest.raises(ConfigError, match=r"clients \[2\] in two edges"):
        tree.start_round(0, {"a": [1, 2], "b": [2, 3]})
    with pytest.raises(ConfigError, match="regions must map every edge"):
        tree.start_round(0, {"a": [1, 2], "b": [3, 4]}, {"a": "r"})
    with pytest.raises(ConfigError, match="max_weight"):
        _tree(_codec(), max_weight=2**20).start_round(0, {"a": [1, 2]})
    rnd = tree.start_round(0, _clusters([4, 4]))
    rnd.fold("edge0", codec, _payload(codec, 0), 1, client_id=0)
    with pytest.raises(SecAggError, match=r"edge 'edge0': 1 of 4 selected clients delivered"):
        rnd.close_edge("edge0")
    with pytest.raises(AggregationError, match="unknown edge"):
        rnd.close_edge("nowhere")
    with pytest.raises(SecAggError, match="no edge delivered"):
        rnd.finalize()


def test_one_edge_needs_no_outer_protocol_and_plain_mode_matches() -> None:
    codec = _codec()
    totals = []
    for secure in (True, False):
        rnd = _tree(codec, secure=secure).start_round(0, _clusters([4]))
        for cid in range(3):
            rnd.fold("edge0", codec, _payload(codec, cid), cid + 1, client_id=cid)
        rnd.close_edge("edge0")
        assert rnd.outer is None
        totals.append(rnd.finalize())
    np.testing.assert_array_equal(totals[0].ring_total, totals[1].ring_total)
    np.testing.assert_array_equal(totals[0].mean, totals[1].mean)


def test_costs_cover_every_party_and_bytes_add_up() -> None:
    """Issue 12 part 4: typed per-party costs for the simulated clocks."""
    codec = _codec()
    clusters = _clusters([4, 4, 4])
    regions = {"edge0": "north", "edge1": "north", "edge2": "south"}
    rnd = _tree(codec).start_round(0, clusters, regions)
    rnd.fold("edge0", codec, _payload(codec, 0), 1, client_id=0)
    so_far = rnd.cost().devices[0]  # what the driver charges when the update is sent
    assert so_far.masked_input_s > 0
    assert so_far.bytes_up > 4 * (codec.count + 1)
    for name, ids in clusters.items():
        for cid in ids[:3]:  # one dropout per edge
            if cid:
                rnd.fold(name, codec, _payload(codec, cid), 1, client_id=cid)
        rnd.close_edge(name)
    cost = rnd.finalize().cost
    assert set(cost.devices) == set(range(12))
    assert set(cost.regions) == {"north", "south"}
    dropped = [cost.devices[ids[3]] for ids in clusters.values()]
    assert all(d.key_agreement_s > 0 and d.masked_input_s == 0 for d in dropped)
    alive = [cost.devices[ids[0]] for ids in clusters.values()]
    assert all(d.masked_input_s > 0 and d.bytes_up > 4 * (codec.count + 1) for d in alive)
    for name, ids in clusters.items():  # an edge's ingress is its devices' uplink
        assert cost.edges[name].bytes_from_below == sum(cost.devices[c].bytes_up for c in ids)
    edges = cost.edges
    assert cost.regions["north"].bytes_up == edges["edge0"].bytes_up + edges["edge1"].bytes_up
    assert cost.center.bytes_from_below == sum(e.bytes_up for e in edges.values())
    assert cost.center.unmasking_s > 0
    assert cost.wall_s > 0
    assert cost.stats().compute_s == pytest.approx(cost.compute_s)


def test_pair_secrets_are_computed_once_and_charged_to_both_ends() -> None:
    u, v = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    pu, pv = (k.public_key() for k in (u, v))
    pairs = PairSecrets()
    first = pairs.agree(u, pu.public_bytes_raw(), pv, 1)
    assert pairs.take_owed() == 0.0
    second = pairs.agree(v, pv.public_bytes_raw(), pu, 0)
    assert first == second == agree(u, pv, 1)
    assert pairs.take_owed() > 0.0


def test_unclosed_edges_are_left_out_and_metrics_follow_the_sum() -> None:
    """Issue 12 part 4: only survivors under arrived edges count, in the sum and the metrics."""
    codec = _codec()
    clusters = _clusters([3, 3, 3, 3])
    rnd = _tree(codec).start_round(0, clusters)
    for name, ids in clusters.items():
        for cid in ids:
            loss = {"train_loss": float(cid)}
            rnd.fold(name, codec, _payload(codec, cid), 1, client_id=cid, metrics=loss)
    for name in ("edge0", "edge1", "edge2"):
        rnd.close_edge(name)  # edge3 is never closed
    result = rnd.finalize()
    assert result.failed_edges == {"edge3": "not closed before finalize"}
    assert result.metrics == {"train_loss": pytest.approx(4.0)}  # clients 0..8
    assert result.total_weight == 9
    with pytest.raises(AggregationError, match="already finalized"):
        rnd.finalize()


def test_flat_round_with_shared_pair_secrets_is_the_same_round() -> None:
    """The memo changes the process's work, not the aggregate or who is charged."""
    config = SecAggConfig(num_clients=6, vector_length=64, threshold=3, degree=5)
    inputs = [np.full(64, i, np.uint32) for i in range(6)]
    runs = [
        simulate_round_detailed(
            inputs, {2}, config, np.random.default_rng(0), share_pair_secrets=share
        )
        for share in (False, True)
    ]
    np.testing.assert_array_equal(runs[0].aggregate, runs[1].aggregate)
    assert int(runs[1].aggregate[0]) == 15 - 2
    assert (runs[1].stats.client_offline_s > 0).all()


def test_tree_options_take_every_protocol_parameter_of_the_flat_ones():
    """The tree is configured by the same ``secagg`` section as a flat run."""
    from dataclasses import asdict, fields

    from fedstrata.secagg import SecAggOptions
    from fedstrata.secagg.tree import TreeSecAggOptions

    flat = SecAggOptions(
        expected_cohort=40, max_weight=7, dropout_rate=0.2, sparse_graph=False,
        precompute_masks=True, security_bits=30, root_seed=5, secure=False,
        round_weights=True, weight_scale=0.5, min_survivors=12,
    )  # fmt: skip
    tree = TreeSecAggOptions.like(flat)
    assert {f.name for f in fields(TreeSecAggOptions)} <= set(asdict(flat))
    assert asdict(tree) == {k: v for k, v in asdict(flat).items() if k != "expected_cohort"}
