"""Topology planner: capacity-constrained clustering, re-homing, round-time prediction."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.coordinator import Topology, TopologyNode
from fedstrata.coordinator.planner import (
    ClusterBounds,
    CostModel,
    Link,
    TierLinks,
    cluster,
    distances_from_coords,
    plan_topology,
    predict_round,
    rehome,
)
from fedstrata.coordinator.topology import Tier
from fedstrata.errors import ConfigError


def planted(regions=4, edges=5, devices=20, seed=0):
    """Coordinates of devices around edge sites inside regions, and true labels."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-2000, 2000, (regions, 2))
    sites = np.repeat(centres, edges, axis=0) + rng.normal(0, 150, (regions * edges, 2))
    coords = np.repeat(sites, devices, axis=0) + rng.normal(0, 5, (regions * edges * devices, 2))
    return coords, np.repeat(np.arange(regions * edges), devices)


@settings(max_examples=25, deadline=None)
@given(st.integers(10, 120), st.integers(0, 1000))
def test_cluster_sizes_respect_the_bounds(n, seed):
    coords = np.random.default_rng(seed).uniform(0, 100, (n, 2))
    bounds = ClusterBounds(10, 20, 15)
    labels, medoids = cluster(distances_from_coords(coords), bounds, np.random.default_rng(seed))
    sizes = np.bincount(labels)
    assert sizes.size == medoids.size
    assert sizes.sum() == n
    assert sizes.max() <= 20
    assert sizes.min() >= 10
    assert all(labels[m] == j for j, m in enumerate(medoids))


def test_plan_recovers_planted_edges_and_regions():
    coords, truth = planted()
    plan = plan_topology(distances_from_coords(coords), np.random.default_rng(0))
    topo = plan.topology
    edges = [n for n in topo.root.walk() if n.tier is Tier.EDGE]
    regions = [n for n in topo.root.walk() if n.tier is Tier.REGION]
    assert len(edges) == 20
    assert len(regions) == 4
    for e in edges:  # every planned edge is one planted site
        assert len(set(truth[list(e.clients)])) == 1
        assert len(e.clients) == 20
    for r in regions:
        assert 1 <= len(r.children) <= 10
    assert sorted(topo.root.all_clients()) == list(range(400))
    assert set(plan.hosts) == {n.name for n in topo.root.walk() if n.tier is not Tier.CENTER}


def test_plan_rejects_bad_input():
    with pytest.raises(ConfigError, match="square"):
        plan_topology(np.zeros((2, 3)), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="num_clients"):
        plan_topology(np.zeros((3, 3)), np.random.default_rng(0), num_clients=5)
    with pytest.raises(ConfigError, match="min_size <= target"):
        ClusterBounds(10, 5, 8)


def two_region_tree():
    e = [
        TopologyNode(f"e{i}", Tier.EDGE, clients=tuple(range(3 * i, 3 * i + 3))) for i in range(3)
    ]
    regions = (
        TopologyNode("r0", Tier.REGION, (e[0], e[1])),
        TopologyNode("r1", Tier.REGION, (e[2],)),
    )
    return Topology(TopologyNode("center", Tier.CENTER, regions))


def test_rehome_moves_a_cluster_to_its_sibling_or_its_region():
    topo = rehome(two_region_tree(), {"e1"})
    assert topo.parent_of()[4] == "e0"
    assert "e1" not in {n.name for n in topo.root.walk()}
    topo = rehome(two_region_tree(), {"e2"})
    assert topo.parent_of()[7] == "r1"  # no live sibling: the region takes the clients
    assert sorted(topo.root.all_clients()) == list(range(9))
    with pytest.raises(ConfigError, match="not edges"):
        rehome(two_region_tree(), {"r0"})


def test_predicted_flat_round_is_bottlenecked_by_the_center_ingress():
    n = 40
    links = TierLinks(Link(1e9), Link(1e8), Link(1e7))
    cost = CostModel(np.ones(n), np.full(n, 2e7), np.full(n, 5e7), 1_000_000, 1_000_000, 1_000_000)
    flat = predict_round(Topology.flat(range(n)), cost, links).global_round_s
    assert flat == pytest.approx(2 * n * 8e6 / 1e7 + 1.0, rel=0.01)  # down + up + compute
    edges = [
        TopologyNode(f"e{i}", Tier.EDGE, clients=tuple(range(10 * i, 10 * i + 10)))
        for i in range(4)
    ]
    regions = (
        TopologyNode("r0", Tier.REGION, tuple(edges[:2])),
        TopologyNode("r1", Tier.REGION, tuple(edges[2:])),
    )
    hier = predict_round(Topology(TopologyNode("center", Tier.CENTER, regions)), cost, links)
    assert hier.global_round_s < flat / 5
    assert hier.edge_round_s < hier.region_sync_s <= hier.global_round_s
    with pytest.raises(ConfigError, match="kappas"):
        predict_round(Topology.flat(range(n)), cost, links, kappa_edge=0)
