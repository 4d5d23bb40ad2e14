"""Issue 12 part 4 (hierarchy composes) and part 5 (per-leg timings) in the tree driver.

Each test checks the invariant of one feature on a tree: the coordinator's cohort,
the deadline, compression at the client tier, the compressed downlink, the round hooks
at the center, the robust center, and the critical path's legs.
"""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from simfakes import FakeData, FakeFactory
from test_sim_hierarchy import LINKS, WideTrainer, params0, tree

from fedstrata.aggregation import CoordinateMedian
from fedstrata.algorithms import FedAvg
from fedstrata.compress import ChainCodec, CompressionSpec
from fedstrata.coordinator import RoundCoordinator, RoundPolicy, Topology
from fedstrata.core import HEADER_SIZE, LocalPlan, RoundContext
from fedstrata.pipeline import Pipeline
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
)
from fedstrata.sim.hierarchy import HierarchicalSimulation, HierSettings
from fedstrata.sim.hooks import CompressedBroadcast
from fedstrata.sim.network import NetworkModel
from fedstrata.strategy import RuleAggregator

EDGES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11))


def profiles(n=12, slow=()):
    table = ProfileTable.generate(n, ProfileDistribution(), np.random.default_rng(0))
    flops = table.flops.copy()
    flops[list(slow)] /= 1e4
    return replace(table, flops=flops)


def make(topology, *, policy=None, rounds=2, factory=None, pipe=None, table=None, **kw):
    data, factory = FakeData(), factory or FakeFactory()
    job = ClientJob(trainer_factory=factory, data=data, root_seed=5, pipeline=pipe)
    return HierarchicalSimulation(
        settings=SimSettings(rounds, LocalPlan(lr=0.5), root_seed=5),
        hier=kw.pop("hier", HierSettings()),
        topology=topology,
        network=NetworkModel(LINKS),
        trainer=factory(),
        executor=InProcessExecutor(job, factory().spec.size),
        client_sizes=data.client_sizes(),
        test_data=data.client(0),
        profiles=table or profiles(),
        server_optimizer=FedAvg(),
        pipeline=pipe,
        coordinator=RoundCoordinator(policy or RoundPolicy(root_seed=5)),
        **kw,
    )


def test_cohort_is_the_coordinators_draw_and_idle_edges_sit_out():
    """Issue 12 part 4: clients_per_round on a tree; edges without members do not work."""
    policy = RoundPolicy(clients_per_round=3, root_seed=5)
    res = make(tree(EDGES), policy=policy, rounds=3).run(params0())
    dense = HEADER_SIZE + 4 * 4
    for r, m in enumerate(res.rounds):
        cohort = set(RoundCoordinator(policy).select(r, np.arange(12)).tolist())
        edges = sum(1 for g in EDGES if cohort & set(g))
        assert m.clients_selected == m.clients_completed == 3
        assert m.tiers.client_updates == 3
        assert m.tiers.edge_rounds == edges
        assert m.tiers.edge_ingress_bytes == 3 * dense
        assert m.tiers.region_ingress_bytes == edges * dense


def test_below_min_clients_the_model_stays():
    """Issue 12 part 4: the coordinator's min_clients rule holds on a tree."""
    policy = RoundPolicy(clients_per_round=3, min_clients=4, root_seed=5)
    res = make(tree(EDGES), policy=policy).run(params0())
    np.testing.assert_array_equal(res.params, params0())


def test_a_late_client_is_dropped_and_its_edge_waits_for_the_deadline():
    """Issue 12 part 4: deadline_s on a tree, measured at the edge from the round start."""
    slow = profiles(slow=(4,))
    free = make(tree(EDGES), table=slow, rounds=1).run(params0()).rounds[0]
    fast = make(tree(EDGES), rounds=1).run(params0()).rounds[0]
    deadline = 2 * fast.sim_round_s
    assert free.sim_round_s > 2 * deadline  # client 4 alone makes the round long
    policy = RoundPolicy(deadline_s=deadline, root_seed=5)
    got = make(tree(EDGES), policy=policy, table=slow, rounds=1).run(params0())
    m = got.rounds[0]
    assert (m.clients_late, m.clients_completed, m.tiers.client_updates) == (1, 11, 11)
    assert deadline < m.sim_round_s < free.sim_round_s
    # the aggregate is the tree's without client 4
    without = tree(((0, 1, 2), (3, 5), (6, 7, 8), (9, 10, 11)))
    ref = make(without, rounds=1).run(params0())
    np.testing.assert_array_equal(got.params, ref.params)


@pytest.mark.parametrize("kappa", [(1, 1), (2, 2)])
def test_critical_legs_add_up_to_the_round(kappa):
    """Issue 12 part 5: hierarchical rounds fill downlink_s, compute_s and uplink_s."""
    hier = HierSettings(kappa_edge=kappa[0], kappa_region=kappa[1])
    res = make(tree(EDGES), hier=hier).run(params0())
    for m in res.rounds:
        assert min(m.downlink_s, m.compute_s, m.uplink_s) > 0
        assert m.downlink_s + m.compute_s + m.uplink_s == pytest.approx(m.sim_round_s)


def test_compressed_client_updates_fill_the_edge_ingress():
    """Issue 12 part 4: the uplink codec's payload bytes are what the edges receive."""
    spec = CompressionSpec(quantize=8)
    pipe = Pipeline([], ChainCodec(spec, 512))
    comp = make(tree(EDGES), factory=WideTrainer, pipe=pipe).run(WideTrainer().initial_params(1))
    dense = make(tree(EDGES), factory=WideTrainer).run(WideTrainer().initial_params(1))
    for c, d in zip(comp.rounds, dense.rounds, strict=True):
        assert c.codec.uplink_ratio > 3.5
        sent = c.codec.uplink_bytes_per_client * 12
        assert c.tiers.edge_ingress_bytes == pytest.approx(sent)
        assert c.tiers.edge_ingress_bytes * 3.5 < d.tiers.edge_ingress_bytes
        assert c.uplink_s < d.uplink_s
    gap = np.linalg.norm(comp.params - dense.params)
    assert gap < 0.05 * np.linalg.norm(dense.params - WideTrainer().initial_params(1))


def test_compressed_downlink_costs_its_messages():
    """Issue 12 part 4: the center's broadcast goes through CompressedBroadcast."""
    p0 = WideTrainer().initial_params(1)
    bc = CompressedBroadcast(p0, CompressionSpec(quantize=8), history=4)
    comp = make(tree(EDGES), factory=WideTrainer, broadcast=bc, rounds=3).run(p0)
    dense = make(tree(EDGES), factory=WideTrainer, rounds=3).run(p0)
    later = comp.rounds[1:]
    assert all(
        c.bytes_down * 3 < d.bytes_down for c, d in zip(later, dense.rounds[1:], strict=True)
    )
    assert all(c.downlink_s < d.downlink_s for c, d in zip(later, dense.rounds[1:], strict=True))
    np.testing.assert_array_equal(bc.encoder.version, 3)


class CountingHook:
    """Records what the center hands to a round hook."""

    applies_every_round = True

    def __init__(self):
        self.calls = []
        self.finished = []

    def start(self, round_idx):
        if round_idx == 2:
            from fedstrata.errors import PrivacyBudgetExhausted

            raise PrivacyBudgetExhausted("budget spent")

    def aggregate(self, mean, accepted, ctx):
        self.calls.append((ctx.round_idx, accepted, mean.copy()))
        return mean + np.float32(1.0)

    def finish(self, round_idx, accepted, loss):
        self.finished.append(accepted)


def test_round_hooks_run_once_at_the_center_and_may_stop_the_run():
    """Issue 12 part 4: central DP's hook sees the center's aggregate once per round."""
    hook = CountingHook()
    policy = RoundPolicy(poisson_rate=0.5, root_seed=5)
    res = make(tree(EDGES), policy=policy, hooks=(hook,), rounds=5).run(params0())
    assert res.stopped_reason == "budget spent"
    assert [r for r, _, _ in hook.calls] == [0, 1]
    assert hook.finished == [accepted for _, accepted, _ in hook.calls]
    for m, (_, accepted, _) in zip(res.rounds, hook.calls, strict=True):
        assert accepted == m.clients_completed
    applied = params0() + sum(mean + np.float32(1.0) for _, _, mean in hook.calls)
    np.testing.assert_allclose(res.params, applied, rtol=1e-6)


def test_robust_center_takes_the_median_of_the_regions_means():
    """Issue 12 part 4: a robust aggregator at the center over its children's partials."""
    groups = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11))
    topo = tree(groups, per_region=2)  # three regions of two edges
    got = make(topo, center_aggregator=CoordinateMedian(), rounds=1).run(params0())
    data, trainer, p = FakeData(), FakeFactory()(), params0()
    means = []
    for j in range(0, 6, 2):
        acc, total = np.zeros(4), 0.0
        for c in (*groups[j], *groups[j + 1]):
            out = np.zeros(4, np.float32)
            res = trainer.train(
                p, data.client(c), LocalPlan(lr=0.5), RoundContext(0, 5).for_client(c), out
            )
            acc += res.num_examples * out.astype(np.float64)
            total += res.num_examples
        means.append((acc / total).astype(np.float32))
    expect = p + np.median(np.stack(means), axis=0).astype(np.float32)
    np.testing.assert_allclose(got.params, expect, rtol=1e-6, atol=1e-7)
    mean = make(topo, rounds=1).run(params0())
    assert not np.allclose(mean.params, got.params)


def _region_means(groups, p):
    """Each region's (two edges') exact weighted mean update and its total weight."""
    data, trainer = FakeData(), FakeFactory()()
    out = []
    for j in range(0, len(groups), 2):
        acc, total = np.zeros(4), 0.0
        for c in (*groups[j], *groups[j + 1]):
            vec = np.zeros(4, np.float32)
            res = trainer.train(
                p, data.client(c), LocalPlan(lr=0.5), RoundContext(0, 5).for_client(c), vec
            )
            acc += res.num_examples * vec.astype(np.float64)
            total += res.num_examples
        out.append(((acc / total).astype(np.float32), total))
    return out


def test_your_rule_at_the_center_gets_the_regions_means_and_weights():
    """Issue 12 part 4: your own aggregation rule at the center of a tree sees exactly
    the children's partial means with their weights, and its output is applied."""
    groups = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11))
    calls = []

    def rule(vectors, weights):
        calls.append((vectors.copy(), weights.copy()))
        return vectors[np.argmin(weights)] * np.float32(2.0)  # no built-in rule does this

    center = RuleAggregator(rule)
    got = make(tree(groups, per_region=2), center_aggregator=center, rounds=1).run(params0())
    ((vectors, weights),) = calls
    expect = _region_means(groups, params0())
    np.testing.assert_allclose(vectors, np.stack([m for m, _ in expect]), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(weights, [w for _, w in expect])
    applied = params0() + vectors[np.argmin(weights)] * np.float32(2.0)
    np.testing.assert_allclose(got.params, applied, rtol=1e-6, atol=1e-7)


def test_depth_one_tree_with_a_cohort_equals_the_flat_engine():
    """Issue 12 part 1: a flat tree with clients_per_round draws and folds as the engine."""
    from fedstrata.sim import Simulation

    data, factory = FakeData(), FakeFactory()
    policy = RoundPolicy(clients_per_round=5, root_seed=5)
    engine = Simulation(
        settings=SimSettings(3, LocalPlan(lr=0.5), root_seed=5),
        coordinator=RoundCoordinator(policy),
        trainer=factory(),
        executor=InProcessExecutor(ClientJob(factory, data, 5), 4),
        client_sizes=data.client_sizes(),
        test_data=data.client(0),
        profiles=profiles(),
        server_optimizer=FedAvg(),
    ).run(params0())
    got = make(Topology.flat(range(12)), policy=policy, rounds=3).run(params0())
    np.testing.assert_array_equal(got.params, engine.params)
    assert [m.clients_selected for m in got.rounds] == [5, 5, 5]


class HalfForClientFour:
    """A planner stand-in: client 4 did half its assigned work."""

    def weight_factor(self, client_id):
        return 0.5 if client_id == 4 else 1.0


def test_partial_work_is_weighted_by_the_fraction_done():
    """Issue 12 part 4: the scheduler's settlement weighting holds at a tree's edges."""
    from fedstrata.aggregation import WeightedMean
    from fedstrata.sim.settlement import SettlementWeighted

    agg = SettlementWeighted(WeightedMean(), HalfForClientFour())
    got = make(Topology.flat(range(12)), aggregator=agg, rounds=1).run(params0())
    data, trainer, p = FakeData(), FakeFactory()(), params0()
    acc, total = np.zeros(4), 0.0
    for c in range(12):
        out = np.zeros(4, np.float32)
        ctx = RoundContext(0, 5).for_client(c)
        res = trainer.train(p, data.client(c), LocalPlan(lr=0.5), ctx, out)
        w = res.num_examples * (0.5 if c == 4 else 1.0)
        acc += w * out.astype(np.float64)
        total += w
    np.testing.assert_allclose(got.params, p + (acc / total).astype(np.float32), rtol=1e-6)


@settings(max_examples=12, deadline=None)
@given(
    k=st.integers(1, 12),
    kappa=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    deadline=st.none() | st.floats(0.01, 0.5),
)
def test_outcomes_partition_the_cohort_and_legs_bound_the_round(k, kappa, deadline):
    """Issue 12 parts 4-5: for any cohort, periods and deadline, every selected client is
    completed, late or failed once, and the critical legs never exceed the round."""
    policy = RoundPolicy(clients_per_round=k, deadline_s=deadline, root_seed=5)
    hier = HierSettings(kappa_edge=kappa[0], kappa_region=kappa[1])
    res = make(tree(EDGES), policy=policy, hier=hier, table=profiles(slow=(4,)), rounds=1)
    m = res.run(params0()).rounds[0]
    assert m.clients_selected == k
    assert m.clients_completed + m.clients_late + m.clients_failed == k
    legs = m.downlink_s + m.compute_s + m.uplink_s
    assert legs <= m.sim_round_s * (1 + 1e-9)
    if m.clients_late == 0 and m.clients_completed:
        assert legs == pytest.approx(m.sim_round_s)
