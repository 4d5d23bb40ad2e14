"""HierarchicalSimulation: HierFAVG over edges/regions, network time, failures."""

import numpy as np
import pytest
from simfakes import FakeData, FakeFactory, FakeTrainer

from fedstrata.algorithms import FedAvg
from fedstrata.compress import CompressionSpec
from fedstrata.coordinator import RoundCoordinator, RoundPolicy, Topology, TopologyNode
from fedstrata.coordinator.planner import CostModel, Link, TierLinks, predict_round
from fedstrata.coordinator.topology import Tier
from fedstrata.core import HEADER_SIZE, EvalResult, LocalPlan, ParamSpec, TrainResult
from fedstrata.errors import ConfigError
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
    Simulation,
)
from fedstrata.sim.hierarchy import HierarchicalSimulation, HierSettings
from fedstrata.sim.network import NetworkModel

LINKS = TierLinks(Link(1e9, 1e-3), Link(1e8, 5e-3), Link(1e7, 2e-2))


def tree(groups=((0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11)), per_region=2):
    edges = [TopologyNode(f"edge-{i}", Tier.EDGE, clients=tuple(g)) for i, g in enumerate(groups)]
    regions = [
        TopologyNode(f"region-{j}", Tier.REGION, tuple(edges[j : j + per_region]))
        for j in range(0, len(edges), per_region)
    ]
    return Topology(TopologyNode("center", Tier.CENTER, tuple(regions)))


class WideTrainer(FakeTrainer):
    """The fake trainer on a 512-entry model (compression needs room to pay off)."""

    @property
    def spec(self):
        return ParamSpec(("w",), ((512,),))

    def initial_params(self, seed):
        return np.random.default_rng(seed).standard_normal(512).astype(np.float32)

    def train(self, params, data, plan, ctx, out):
        target = np.resize(data.x.mean(axis=0), 512)
        noise = ctx.rng("noise").standard_normal(512).astype(np.float32) * np.float32(0.01)
        out[:] = np.float32(plan.lr) * (target - params) + noise
        return TrainResult(len(data), 1, {"train_loss": float(np.abs(out).mean())})

    def evaluate(self, params, data):
        loss = float(np.square(params - np.resize(data.x.mean(axis=0), 512)).mean())
        return EvalResult(loss=loss, accuracy=1.0 / (1.0 + loss), num_examples=len(data))


def make(topology, hier=None, rounds=3, *, data=None, links=LINKS, factory=None):
    data = data or FakeData()
    factory = factory or FakeFactory()
    job = ClientJob(trainer_factory=factory, data=data, root_seed=5)
    return HierarchicalSimulation(
        settings=SimSettings(rounds, LocalPlan(lr=0.5), root_seed=5),
        hier=hier or HierSettings(),
        topology=topology,
        network=NetworkModel(links),
        trainer=factory(),
        executor=InProcessExecutor(job, factory().spec.size),
        client_sizes=data.client_sizes(),
        test_data=data.client(0),
        profiles=ProfileTable.generate(
            data.num_clients, ProfileDistribution(), np.random.default_rng(0)
        ),
        server_optimizer=FedAvg(),
    )


def params0():
    return FakeFactory()().initial_params(1)


def test_kappa_one_equals_flat_fedavg_of_the_engine():
    data = FakeData()
    factory = FakeFactory()
    engine = Simulation(
        settings=SimSettings(3, LocalPlan(lr=0.5), root_seed=5),
        coordinator=RoundCoordinator(RoundPolicy(None, 1, None, 5)),
        trainer=factory(),
        executor=InProcessExecutor(ClientJob(factory, data, 5), 4),
        client_sizes=data.client_sizes(),
        test_data=data.client(0),
        profiles=ProfileTable.generate(12, ProfileDistribution(), np.random.default_rng(0)),
        server_optimizer=FedAvg(),
    )
    ref = engine.run(params0())
    for topo in (tree(), Topology.flat(range(12))):
        got = make(topo).run(params0())
        np.testing.assert_allclose(got.params, ref.params, rtol=1e-6, atol=1e-7)
        assert [m.train_loss for m in got.rounds] == pytest.approx(
            [m.train_loss for m in ref.rounds], rel=1e-9
        )


def test_periods_count_edge_rounds_and_center_ingress():
    sim = make(tree(), HierSettings(kappa_edge=3, kappa_region=2), rounds=2)
    res = sim.run(params0())
    dense = HEADER_SIZE + 4 * 4
    for m in res.rounds:
        assert m.tiers.edge_rounds == 4 * 3 * 2
        assert m.tiers.client_updates == 12 * 3 * 2
        assert m.tiers.center_ingress_bytes == 2 * dense  # two regions, once
        assert m.tiers.region_ingress_bytes == 2 * 4 * dense  # 2 syncs x 4 edges
    flat = make(Topology.flat(range(12)), rounds=1).run(params0())
    assert flat.rounds[0].tiers.center_ingress_bytes == 12 * dense


def test_hierfavg_kappa_matches_a_hand_written_loop():
    data = FakeData()
    topo = tree(groups=((0, 1, 2, 3, 4, 5), (6, 7, 8, 9, 10, 11)), per_region=2)
    got = make(topo, HierSettings(kappa_edge=2), rounds=1).run(params0())
    trainer = FakeFactory()()
    from fedstrata.core import RoundContext

    def edge_round(model, clients, sub):
        acc, total = np.zeros(4), 0.0
        for c in clients:
            out = np.zeros(4, np.float32)
            ctx = RoundContext(sub, 5).for_client(c)
            res = trainer.train(model, data.client(c), LocalPlan(lr=0.5), ctx, out)
            acc += res.num_examples * out.astype(np.float64)
            total += res.num_examples
        return model + (acc / total).astype(np.float32), total

    p = params0()
    models = []
    for clients in ((0, 1, 2, 3, 4, 5), (6, 7, 8, 9, 10, 11)):
        m, _ = edge_round(p, clients, 0)
        m, w = edge_round(m, clients, 1)
        models.append((m, w))
    expect = sum(w * (m - p).astype(np.float64) for m, w in models) / sum(w for _, w in models)
    np.testing.assert_allclose(got.params, p + expect.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_failed_edge_loses_only_its_cluster_then_is_rehomed():
    hier = HierSettings(failures={0: {"edge-1"}})
    sim = make(tree(), hier, rounds=2)
    res = sim.run(params0())
    first, second = res.rounds
    assert first.clients_failed == 3
    assert first.clients_completed == 9
    assert first.tiers.client_updates == 9
    assert second.clients_failed == 0
    assert second.tiers.client_updates == 12
    names = {n.name for n in sim.topology.root.walk()}
    assert "edge-1" not in names
    assert sorted(sim.topology.root.all_clients()) == list(range(12))
    assert sim.topology.parent_of()[3] == "edge-0"  # the live sibling in region-0


def test_random_edge_failures_are_seeded_and_bounded():
    a = make(tree(), HierSettings(edge_failure_rate=0.5), rounds=3).run(params0())
    b = make(tree(), HierSettings(edge_failure_rate=0.5), rounds=3).run(params0())
    assert a.params.tobytes() == b.params.tobytes()
    assert all(m.clients_failed <= 12 for m in a.rounds)


def test_compressed_partials_shrink_center_ingress_with_error_feedback():
    spec = CompressionSpec(sparsify="topk", density=0.5, quantize=8, error_feedback=True)
    wide = WideTrainer
    p0 = wide().initial_params(1)
    dense = make(tree(), HierSettings(kappa_edge=2), rounds=6, factory=wide).run(p0)
    comp_sim = make(tree(), HierSettings(kappa_edge=2, partial_spec=spec), rounds=6, factory=wide)
    comp = comp_sim.run(p0)
    d_in = dense.rounds[0].tiers.center_ingress_bytes
    assert comp.rounds[0].tiers.center_ingress_bytes < 0.6 * d_in
    assert comp_sim._codec is not None
    assert (
        comp_sim._codec.state_store.get(comp_sim._node_ids["region-0"], "partial_ef") is not None
    )
    # error feedback keeps the compressed run close to the dense one
    gap = np.linalg.norm(comp.params - dense.params)
    assert gap < 0.25 * np.linalg.norm(dense.params - p0)


def test_flat_is_slower_than_hierarchy_behind_a_thin_wan():
    links = TierLinks(Link(1e9), Link(1e8), Link(1e3))  # 1 kb/s into the center
    flat = make(Topology.flat(range(12)), rounds=1, links=links).run(params0())
    hier = make(tree(), rounds=1, links=links).run(params0())
    assert flat.rounds[0].sim_round_s > 4 * hier.rounds[0].sim_round_s


def test_planner_prediction_is_close_to_the_simulated_round():
    sim = make(tree(), HierSettings(kappa_edge=2, kappa_region=2), rounds=1)
    res = sim.run(params0())
    plan = LocalPlan(lr=0.5)
    p = sim.profiles
    examples = np.array([plan.num_samples(int(s)) for s in sim.client_sizes])
    dense = HEADER_SIZE + 16
    cost = CostModel(examples * 1e6 / p.flops, p.uplink_bps, p.downlink_bps, dense, dense, dense)
    pred = predict_round(tree(), cost, LINKS, kappa_edge=2, kappa_region=2)
    assert pred.global_round_s == pytest.approx(res.rounds[0].sim_round_s, rel=0.2)


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="kappa_edge"):
        HierSettings(kappa_edge=0)
    with pytest.raises(ConfigError, match="edge_failure_rate"):
        HierSettings(edge_failure_rate=1.0)


def test_failing_clients_make_one_warning_per_global_round(caplog):
    """Issue 11 defect 21 (tiers): NaN clients are summed up once per global round."""
    import logging

    caplog.set_level(logging.INFO, logger="fedstrata.sim.hierarchy")
    sim = make(tree(), rounds=2, factory=FakeFactory(nan_clients=(0, 4, 7)))
    sim.run(params0())
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("round 0: 3 of 12 client updates not used: 3 x non-finite")
    assert "lower client.lr" in warnings[0]
    assert (
        sum("dropped" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO) == 6
    )
