"""Two-tier aggregation: neither the edge nor the center sees one device; the sum is exact."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from scipy import stats

from fedstrata.errors import ConfigError
from fedstrata.secagg import (
    ClientProtocol,
    ClusterReport,
    Entropy,
    MaskExpander,
    SecAggConfig,
    ServerProtocol,
    TwoTierSecAgg,
    UnmaskResponse,
    drive_round,
    remove_cluster_masks,
)

M = 1 << 14
SIZES = (6, 8, 7, 5)


def _tiers(m: int = M) -> TwoTierSecAgg:
    inner = [
        SecAggConfig(num_clients=n, vector_length=m, threshold=3, degree=n - 1) for n in SIZES
    ]
    outer = SecAggConfig(num_clients=len(SIZES), vector_length=m, threshold=2, degree=3)
    return TwoTierSecAgg(inner, outer)


def _uniform(vector: np.ndarray) -> bool:
    counts = np.bincount(vector.view(np.uint8), minlength=256)
    return bool(stats.chisquare(counts).pvalue > 1e-4)


def _inputs(constant: int | None = None) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    if constant is not None:
        return [[np.full(M, constant, np.uint32) for _ in range(n)] for n in SIZES]
    return [[rng.integers(0, 1 << 20, M, dtype=np.uint32) for _ in range(n)] for n in SIZES]


def test_global_sum_is_exact_with_device_dropouts() -> None:
    inputs = _inputs()
    dropped = [{1}, set(), {0, 5}, {4}]
    result = _tiers().run(inputs, dropped, np.random.default_rng(1))
    expect = np.zeros(M, np.uint32)
    for e, cluster in enumerate(inputs):
        for d, x in enumerate(cluster):
            if d not in dropped[e]:
                expect += x
    np.testing.assert_array_equal(result.aggregate, expect)


def test_dropped_edge_leaves_its_cluster_out() -> None:
    inputs = _inputs()
    result = _tiers().run(inputs, [set()] * 4, np.random.default_rng(2), dropped_edges={1})
    expect = np.zeros(M, np.uint32)
    for e in (0, 2, 3):
        for x in inputs[e]:
            expect += x
    np.testing.assert_array_equal(result.aggregate, expect)


def test_neither_edge_nor_center_sees_a_device_update() -> None:
    inputs = _inputs(constant=0)  # the worst case: a constant, known-looking input
    result = _tiers().run(inputs, [set(), {2}, set(), set()], np.random.default_rng(3))
    assert _uniform(result.edge_views[0][0])  # edge's view of one device
    for e, cluster_value in enumerate(result.cluster_values):
        # the edge's own result is its cluster sum (zero here) plus an unknown mask
        assert _uniform(cluster_value), e
        assert _uniform(result.center_views[e])  # center's view of one edge
    assert not result.aggregate.any()


def test_edge_gets_only_sealed_self_mask_shares_and_the_center_opens_them() -> None:
    rng = np.random.default_rng(4)
    entropy = Entropy(rng)
    center_key = X25519PrivateKey.from_private_bytes(rng.bytes(32))
    center_public = center_key.public_key().public_bytes_raw()
    cfg = SecAggConfig(num_clients=6, vector_length=M, threshold=3, degree=5)
    devices = [
        ClientProtocol(cfg, d, entropy=entropy, center_public=center_public) for d in range(6)
    ]
    edge = ServerProtocol(cfg, 0, entropy=entropy, remove_self_masks=False)
    responses: list[UnmaskResponse] = []
    original = edge.receive_unmask
    edge.receive_unmask = lambda msg: (responses.append(msg), original(msg))[1]  # type: ignore[method-assign]
    inputs = [np.full(M, 3, np.uint32) for _ in range(6)]
    value, _ = drive_round(devices, edge, inputs, {2})
    assert responses
    assert all(not r.self_mask_shares and r.sealed for r in responses)
    assert _uniform(value - np.uint32(15))  # the edge holds S_e + B_e, B_e unknown to it
    report = ClusterReport(cfg.threshold, 0, edge.survivors, edge.sealed_shares, edge.graph)
    remove_cluster_masks(value, [report], center_key, MaskExpander(M))
    np.testing.assert_array_equal(value, np.full(M, 15, np.uint32))


def test_tiers_must_agree() -> None:
    inner = [SecAggConfig(num_clients=4, vector_length=8, threshold=2, degree=3)]
    with pytest.raises(ConfigError, match="inner configs"):
        TwoTierSecAgg(inner, SecAggConfig(num_clients=3, vector_length=8, threshold=2, degree=2))
    with pytest.raises(ConfigError, match="vector lengths"):
        TwoTierSecAgg(
            inner * 2, SecAggConfig(num_clients=2, vector_length=9, threshold=1, degree=1)
        )
