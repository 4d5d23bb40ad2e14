"""Issue 12 part 4: secure aggregation at every tier of a tree, from the config.

``fedstrata.api.run`` on a two-region tree with ``secagg.enabled``: the secure mean is
the plain tree mean within the ring's quantization bound, late clients are dropouts
recovered in their edge, the protocol's costs are in the recorded metrics, the ring
codec's random-k density cuts the edges' ingress, allocation composes, and what the
tree cannot honour under secure aggregation is refused with its reason.
"""

import numpy as np
import pytest

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.errors import ConfigError

REGIONS = {"r0": {"e0": [0, 1, 2, 3], "e1": [4, 5, 6, 7]}, "r1": {"e2": [8, 9, 10, 11]}}
TREE = [
    "output.run_store=false",
    "sim.workers=0",
    "rounds.rounds=1",
    "data.num_clients=12",
    "rounds.clients_per_round=null",
    "topology.mode=explicit",
    f"topology.regions={REGIONS}",
]
SECURE = "secagg.enabled=true"
STEP = 2 * 1.0 / 2**16  # one quantization step of the default ring (clip 1, 16 bits)


def tree_run(*extra: str):
    return run(load_config(overrides=[*TREE, *extra])).simulation


@pytest.fixture(scope="module")
def plain():
    return tree_run()


@pytest.fixture(scope="module")
def secure():
    return tree_run(SECURE)


def test_secure_tree_mean_is_the_plain_tree_mean(plain, secure):
    """Issue 12 part 4: config -> api.run -> the mean of all clients, through the ring."""
    np.testing.assert_allclose(secure.params, plain.params, atol=STEP)
    m = secure.rounds[0]
    assert m.clients_completed == m.secagg_tree.survivors == 12
    assert m.secagg_tree.clusters == 3


def test_protocol_costs_are_recorded_and_charged(plain, secure):
    """Issue 12 part 4: the protocol's bytes and compute on the round's clocks."""
    m, p = secure.rounds[0], plain.rounds[0]
    assert m.sim_round_s > p.sim_round_s
    assert m.secagg_tree.compute_s > 0
    assert m.secagg_tree.device_bytes_up_mean > 0
    # every edge's protocol bytes (masked value, sealed shares, outer messages) reach
    # the center through the regions
    edges_up = 3 * m.secagg_tree.edge_bytes_up_mean
    assert m.tiers.center_ingress_bytes == pytest.approx(edges_up)


def test_a_late_client_is_a_dropout_recovered_in_its_edge(plain):
    """Issue 12 part 4: rounds.deadline_s under tree secure aggregation."""
    deadline = sorted(m.sim_round_s for m in plain.rounds)[0]
    res = tree_run(SECURE, f"rounds.deadline_s={0.6 * deadline}")
    m = res.rounds[0]
    assert m.clients_late > 0
    assert m.clients_completed == m.secagg_tree.survivors == 12 - m.clients_late


def test_ring_density_cuts_the_edges_ingress(secure):
    """Issue 12 part 4: random-k into the ring (secagg.density) on a tree."""
    res = tree_run(SECURE, "secagg.density=0.25")
    sparse, dense = res.rounds[0], secure.rounds[0]
    assert sparse.tiers.edge_ingress_bytes * 3 < dense.tiers.edge_ingress_bytes
    assert sparse.secagg_tree.device_bytes_up_mean * 3 < dense.secagg_tree.device_bytes_up_mean


def test_allocation_composes_with_tree_secure_aggregation():
    """Issue 12 part 4: scheduling.allocation's settlement weights enter the ring."""
    res = tree_run(SECURE, "rounds.deadline_s=0.2", "scheduling.allocation=true")
    m = res.rounds[0]
    assert m.schedule is not None
    assert m.clients_late == 0
    assert m.clients_completed == m.secagg_tree.survivors == 12


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["topology.kappa_edge=2"], "two-tier masks hide"),
        (["topology.partial_compression.preset=int8"], "masks' cancellation"),
    ],
)
def test_refused_combinations_name_their_reason(extra, reason):
    """Issue 12 part 3: what tree secure aggregation cannot honour is refused."""
    with pytest.raises(ConfigError, match=reason):
        load_config(overrides=[*TREE, SECURE, *extra])


def test_max_weight_scales_the_weights_on_a_tree_as_in_a_flat_run():
    """Issue 12: ``secagg.max_weight`` below the largest client quantizes the weights to
    ``max_weight`` levels (the flat aggregator's rule); the tree used its own copy of
    the weight rule and capped them instead, so large clients lost weight."""
    res = tree_run(SECURE, "secagg.max_weight=3")
    assert all(m.secagg_tree.weights_capped == 0 for m in res.rounds)
    assert all(m.secagg_tree.survivors == m.clients_completed for m in res.rounds)
