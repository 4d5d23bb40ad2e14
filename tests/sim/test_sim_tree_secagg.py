"""Issue 12 part 4: secure aggregation at every tier, driven by the tree engine.

The secure mean is the plain tree mean of exactly the surviving clients (within the
ring's quantization bound), bit for bit the same ring sum taken in the clear, despite
failing clients, a failing edge and an edge below its threshold; the protocol's
compute and bytes are charged to the simulated clocks and byte counters.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simfakes import FakeData, FakeFactory
from test_sim_hierarchy import LINKS, params0, tree
from test_sim_tree import profiles

from fedstrata.algorithms import FedAvg
from fedstrata.compress import randk_support
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core import LocalPlan
from fedstrata.errors import ConfigError
from fedstrata.pipeline import Pipeline
from fedstrata.secagg import RingCodec, RingSpec
from fedstrata.secagg.tree import TreeSecAgg, TreeSecAggOptions
from fedstrata.sim import ClientJob, InProcessExecutor, SimSettings
from fedstrata.sim.hierarchy import HierarchicalSimulation, HierSettings
from fedstrata.sim.network import NetworkModel

N = 20
EDGES = tuple(tuple(range(i, i + 4)) for i in range(0, N, 4))  # 5 edges of 4, 3 regions
SPEC = RingSpec(clip=16.0, input_bits=20)  # updates are ~ client ids: no clipping
STEP = 2 * SPEC.clip / 2**SPEC.input_bits  # one quantization step


def make(groups, *, raised=(), failures=None, pipe=None, rounds=1, secure=None, hier=None):
    data, factory = FakeData(N), FakeFactory(raise_clients=tuple(raised))
    job = ClientJob(trainer_factory=factory, data=data, root_seed=5, pipeline=pipe)
    return HierarchicalSimulation(
        settings=SimSettings(rounds, LocalPlan(lr=0.5), root_seed=5),
        hier=hier or HierSettings(failures=failures or {}), topology=tree(groups),
        network=NetworkModel(LINKS), trainer=factory(),
        executor=InProcessExecutor(job, factory().spec.size),
        client_sizes=data.client_sizes(), test_data=data.client(0), profiles=profiles(N),
        server_optimizer=FedAvg(), pipeline=pipe,
        coordinator=RoundCoordinator(RoundPolicy(root_seed=5)), secure=secure,
    )  # fmt: skip


def secure_run(groups=EDGES, *, spec=SPEC, secure=True, **kw):
    codec = RingCodec(spec, 4, randk_support)
    options = TreeSecAggOptions(max_weight=6, dropout_rate=0.3, secure=secure, root_seed=5)
    sim = make(groups, pipe=Pipeline([], codec), secure=TreeSecAgg(codec, options), **kw)
    return sim.run(params0())


def plain_run(groups=EDGES, **kw):
    return make(groups, **kw).run(params0())


def test_secure_mean_is_the_plain_mean_of_the_survivors():
    """Issue 12 part 4: a failed client (recovered in its edge) and a failed edge."""
    failures = {0: {"edge-4"}}
    sec = secure_run(raised=(4,), failures=failures)
    ref = plain_run(raised=(4,), failures=failures)
    np.testing.assert_allclose(sec.params, ref.params, atol=STEP)
    m = sec.rounds[0]
    assert m.clients_completed == ref.rounds[0].clients_completed == 15
    assert m.secagg_tree.survivors == 15
    assert m.secagg_tree.outer_dropouts == 1  # edge-4 (failed)


def test_an_edge_below_its_threshold_is_an_outer_dropout():
    """Issue 12 part 4: 1 of 4 delivered; that client's update is lost with its edge."""
    sec = secure_run(raised=(8, 9, 10))
    ref = plain_run(raised=(8, 9, 10, 11))
    np.testing.assert_allclose(sec.params, ref.params, atol=STEP)
    m = sec.rounds[0]
    assert m.clients_completed == ref.rounds[0].clients_completed == 16
    assert m.clients_failed == 4
    assert m.secagg_tree.outer_dropouts == 1
    assert m.secagg_tree.lost_clients == 1  # client 11


def test_secure_sum_equals_the_same_ring_sum_in_the_clear():
    """Issue 12 part 4: masks cancel exactly at every tier (random-k into the ring)."""
    spec = RingSpec(clip=16.0, input_bits=20, density=0.5)
    kw = {"raised": (1,), "failures": {1: {"edge-0"}}, "spec": spec, "rounds": 2}
    sec, clear = secure_run(**kw), secure_run(secure=False, **kw)
    np.testing.assert_array_equal(sec.params, clear.params)
    assert [m.clients_completed for m in sec.rounds] == [19, 16]


def test_a_client_alone_in_its_edge_sits_out():
    """Issue 12 part 4: a cluster of one would reveal its client; it sits out."""
    groups = (*EDGES[:2], (8,), (9, 10, 11), *EDGES[3:])
    sec = secure_run(groups)
    ref = plain_run(groups, raised=(8,))
    np.testing.assert_allclose(sec.params, ref.params, atol=STEP)
    m = sec.rounds[0]
    assert m.secagg_tree.sat_out == 1
    assert (m.clients_completed, m.clients_failed) == (19, 1)
    assert m.tiers.edge_rounds == 5  # the lone client's edge did not work


def test_protocol_costs_are_charged_to_the_clocks_and_bytes():
    """Issue 12 part 4: key agreement, masked inputs and unmasking on the legs and links."""
    sec = secure_run().rounds[0]
    plain = plain_run(pipe=Pipeline([], RingCodec(SPEC, 4, randk_support))).rounds[0]
    n, masked = N, 4 * (4 + 1)
    device_up = n * sec.secagg_tree.device_bytes_up_mean
    # each device's protocol bytes (its masked input carried by its ring payload)
    extra = device_up - n * masked
    assert sec.tiers.edge_ingress_bytes == pytest.approx(plain.tiers.edge_ingress_bytes + extra)
    assert sec.bytes_up > plain.bytes_up + extra
    assert sec.secagg_tree.unmask_bytes_up > 0
    assert sec.tiers.center_ingress_bytes >= 5 * sec.secagg_tree.edge_bytes_up_mean
    # every device's key agreement is on its compute leg, its bytes on its links, and
    # the edges' and the center's unmasking after their last arrival: all only add time
    assert sec.sim_round_s > plain.sim_round_s
    assert sec.secagg_tree.compute_s > 0


def test_an_edge_with_no_update_is_an_outer_dropout():
    """Issue 12 part 4: every client of an edge failed; the others' sum survives."""
    sec = secure_run(raised=(0, 1, 2, 3))
    ref = plain_run(raised=(0, 1, 2, 3))
    np.testing.assert_allclose(sec.params, ref.params, atol=STEP)
    assert sec.rounds[0].secagg_tree.outer_dropouts == 1


def unmasks(parties, survivors):
    """Whether a protocol of ``parties`` unmasks with ``survivors`` (full graph): each
    survivor's seed needs ``threshold`` surviving share holders besides itself."""
    options = TreeSecAggOptions(max_weight=6, dropout_rate=0.3)
    threshold = TreeSecAgg(RingCodec(SPEC, 4), options).protocol_config(parties)[0].threshold
    return survivors >= threshold + 1


@settings(max_examples=8, deadline=None)
@given(
    raised=st.sets(st.integers(0, N - 1), max_size=3),
    failed=st.sets(st.sampled_from(["edge-0", "edge-1", "edge-2", "edge-3"]), max_size=1),
)
def test_secure_mean_matches_the_plain_survivors_for_any_dropouts(raised, failed):
    """Issue 12 part 4 (property): whatever fails, the sum is of exactly the survivors."""
    sec = secure_run(raised=raised, failures={0: failed})
    names = [f"edge-{i}" for i in range(len(EDGES))]
    arrived = [
        n not in failed and unmasks(len(g), sum(c not in raised for c in g))
        for n, g in zip(names, EDGES, strict=True)
    ]
    lost = {c for g, ok in zip(EDGES, arrived, strict=True) if not ok for c in g}
    if not unmasks(len(EDGES), sum(arrived)):
        lost = set(range(N))  # the outer protocol fails: no secure sum this round
    ref = plain_run(raised=raised | lost, failures={0: failed})
    np.testing.assert_allclose(sec.params, ref.params, atol=STEP)
    assert sec.rounds[0].clients_completed == ref.rounds[0].clients_completed


def test_the_driver_refuses_aggregation_periods_under_secure_aggregation():
    """Issue 12 part 4: an edge round between center rounds would need the edge's sum."""
    with pytest.raises(ConfigError, match="kappa_edge"):
        secure_run(hier=HierSettings(kappa_edge=2))
