"""Tiers as in the simulator: an explicit tree's edges run HierFAVG's periods over gRPC."""

import asyncio
from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiertree import run_regions, run_tree

from fedstrata.aggregation import WeightedMean
from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.coordinator import RoundCoordinator, RoundOutcome, RoundPolicy
from fedstrata.coordinator.periods import NodePeriod, Periods
from fedstrata.coordinator.topology import Tier
from fedstrata.core.training import LocalPlan
from fedstrata.errors import ConfigError
from fedstrata.runtime import check_supported, deployment
from fedstrata.runtime.records import CenterSettings, RoundRecord, TaskKind, TaskSpec
from fedstrata.runtime.tier_periods import TreeSpec, run_periods

EDGES = {"e0": [0, 1, 2], "e1": [3, 4, 5]}
TREE = [
    "output.run_store=false",
    "sim.workers=0",
    "data.num_clients=6",
    "rounds.rounds=2",
    "rounds.clients_per_round=4",
    "model.kind=logreg",
    "client.steps=3",
    "client.epochs=null",
    "topology.mode=explicit",
    'topology.edges={"e0": [0, 1, 2], "e1": [3, 4, 5]}',
    "topology.kappa_edge=2",
]


INT8 = ["compression.preset=int8", "topology.partial_compression.preset=int8"]


DOWNLINK = ["topology.kappa_edge=1", "downlink.preset=int8"]  # relayed by the edges

# kappa_edge = 2: the first edge round relays the center's message, the second sends
# the edge's local model dense (the clients keep their replica for the next message)
DOWNLINK_PERIODS = ["downlink.preset=int8"]


DEADLINE = ["rounds.deadline_s=30"]  # the edges' rounds share it; nobody is late


MEDIAN_INT8 = ["server.aggregator=median", *INT8]  # the center's rule over re-compressed means


@pytest.mark.parametrize(
    "extra",
    [[], INT8, ["server.aggregator=median"], MEDIAN_INT8, DOWNLINK, DOWNLINK_PERIODS, DEADLINE],
)
def test_edges_with_periods_and_sampling_equal_the_simulator(extra):
    cfg = load_config(overrides=[*TREE, *extra])
    sim = run(cfg).simulation
    out = asyncio.run(run_tree(deployment(cfg), EDGES))
    result = out.result
    assert not result.rejections
    assert len(result.rounds) == 2
    # every edge ran kappa_edge = 2 edge rounds per center round
    kappa = cfg.topology.kappa_edge
    for report in out.edges.values():
        assert report is not None
        assert len(report.rounds) == 2 * kappa
    # sampling below the edges: 4 of the 6 clients train in each global round, as drawn
    # by the simulator's coordinator over the whole tree
    spec = TreeSpec.of(cfg, 6)
    for r in range(2):
        drawn = sorted(m for e in spec.edges for m in spec.members(e, spec.periods.base(r)))
        trained = sorted(
            c
            for report in out.edges.values()
            if report is not None
            for c in report.rounds[kappa * r].outcome.accepted
        )
        assert len(drawn) == 4
        assert trained == drawn
    assert result.params.tobytes() == sim.params.tobytes()


def test_periods_number_edge_rounds_and_send_up_the_model_change():
    p = Periods(kappa_edge=2, kappa_region=3)
    assert p.base(1) == 6
    assert (p.global_round(11), p.global_round(12)) == (1, 2)

    assert p.rounds(Tier.EDGE, 6) == [6, 7]
    assert p.rounds(Tier.REGION, 6) == [6, 8, 10]
    assert p.rounds(Tier.CENTER, 6) == [6]
    with pytest.raises(ConfigError, match="kappa_edge"):
        Periods(kappa_edge=0)


def test_a_client_of_another_edge_at_an_aggregator_is_refused():
    cfg = load_config(overrides=TREE)
    spec = TreeSpec.of(cfg, 6)
    assert spec.identify([0, 2]).name == "e0"
    assert spec.identify([], "e1").name == "e1"
    with pytest.raises(ConfigError, match=r"under \['e0', 'e1'\]"):
        spec.identify([1, 4])
    with pytest.raises(ConfigError, match=r"clients \[1\] connected to edge 'e1'"):
        spec.identify([1, 4], "e1")
    with pytest.raises(ConfigError, match="not an edge"):
        spec.identify([0], "e9")


def test_the_cohort_is_the_simulators_draw_cut_below_each_edge():
    cfg = load_config(overrides=TREE)
    spec = TreeSpec.of(cfg, 6)
    for r in range(4):
        want = RoundCoordinator(RoundPolicy(4, 1, None, cfg.seed)).select(r, np.arange(6))
        got = [m for e in spec.edges for m in spec.members(e, spec.periods.base(r) + 1)]
        assert got == want.tolist()


def test_a_center_must_serve_one_tier_per_edge():
    dep = deployment(load_config(overrides=TREE))
    with pytest.raises(ConfigError, match="puts 2 aggregators"):
        dep.center(participants=3)
    with pytest.raises(ConfigError, match="got None"):
        dep.center()


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["topology.mode=auto", "topology.edges=null"], "topology.mode=auto"),
        (["topology.edge_failure_rate=0.1"], "topology.edge_failure_rate"),
    ],
)
def test_what_the_runtime_cannot_run_of_a_tree_is_refused(overrides, names):
    auto = ["topology.edge_size=3", "topology.edge_min=1", "topology.region_min=1"]
    extra = auto if "topology.mode=auto" in overrides else []
    cfg = load_config(overrides=[*TREE, *overrides, *extra])
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        check_supported(cfg)


def test_a_killed_edge_loses_its_subtree_for_the_round_and_its_clients_rehome():
    cfg = load_config(overrides=[*TREE, "rounds.rounds=3", "rounds.clients_per_round=null"])
    dep = deployment(cfg)
    rehome = {c: ["e0"] for c in EDGES["e1"]}
    # the center starts a round once all 6 clients are reachable again (re-homed)
    out = asyncio.run(
        run_tree(dep, EDGES, kill="e1", kill_after=3, parents=rehome, min_available=6)
    )
    rounds = out.result.rounds
    assert [r.outcome.applied for r in rounds] == [True, True, True]
    e0, e1 = 6, 7  # the tiers' participant ids
    assert sorted(rounds[0].outcome.accepted) == [e0, e1]
    # killed in its first edge round of global round 1: only its subtree is lost
    assert rounds[1].outcome.accepted == (e0,)
    assert [cid for cid, _ in rounds[1].outcome.failed] == [e1]
    # from the next round e0 trains e1's clients too (every client is in the cohort)
    report = out.edges["e0"]
    assert report is not None
    assert len(report.rounds) == 3 * 2
    assert sorted(report.rounds[-1].outcome.accepted) == [0, 1, 2, 3, 4, 5]
    assert out.edges["e1"] is None
    assert np.isfinite(out.result.params).all()


REGIONS = {"r0": {"e0": [0, 1], "e1": [2, 3]}, "r1": {"e2": [4, 5], "e3": [6, 7]}}


@pytest.mark.parametrize("extra", [[], ["downlink.preset=int8"]])
def test_regions_with_both_periods_equal_the_simulator(extra):
    tree = [
        "data.num_clients=8",
        "rounds.clients_per_round=6",
        "topology.edges=null",
        f"topology.regions={REGIONS}",
        "topology.kappa_region=2",
        *INT8,
        *extra,
    ]
    cfg = load_config(overrides=[*TREE, *tree])
    sim = run(cfg).simulation
    out = asyncio.run(run_regions(deployment(cfg), REGIONS))
    assert not out.result.rejections
    assert len(out.result.rounds) == 2
    for name, report in out.edges.items():
        assert report is not None
        # a region runs kappa_region = 2 region rounds per center round; an edge
        # kappa_edge = 2 edge rounds per region round
        assert len(report.rounds) == (2 * 2 if name.startswith("r") else 2 * 2 * 2), name
    assert out.result.params.tobytes() == sim.params.tobytes()


@pytest.mark.parametrize("dp", [[], ["privacy.mechanism=distributed"]])
def test_secure_aggregation_through_the_edges_equals_the_simulator(dp):
    over = ["topology.kappa_edge=1", "rounds.clients_per_round=null", "secagg.enabled=true"]
    cfg = load_config(overrides=[*TREE, *over, *dp])
    sim = run(cfg).simulation
    out = asyncio.run(run_tree(deployment(cfg), EDGES))
    assert not out.result.rejections
    assert out.result.params.tobytes() == sim.params.tobytes()


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 4),
    st.lists(st.floats(0.5, 20.0), min_size=1, max_size=4),
    st.integers(0, 2**16),
)
def test_a_nodes_periods_send_up_its_model_change_weighted(repeats, weights, seed):
    """Law: after its periods a node's partial has the mean (local - model), with the
    last period's weight; one period sends its last state as it is."""
    rng = np.random.default_rng(seed)
    model = rng.normal(size=5).astype(np.float32)
    period = NodePeriod(model, repeats)
    mean = WeightedMean()
    state = mean.init(5)
    for _ in range(repeats):
        state = mean.init(5)
        for w in weights:
            state = mean.accumulate(state, rng.normal(size=5).astype(np.float32), w)
        period.after(state.total_weight, partial(mean.finalize, state))
        if repeats == 1:
            assert period.local is model  # one period keeps the parent's model
    out = period.finish(state, state.total_weight, lambda s: s)
    if repeats == 1:
        assert out is state
        return
    assert out.total_weight == state.total_weight
    np.testing.assert_allclose(mean.finalize(out), period.local - model, rtol=1e-5, atol=1e-6)


class _SlowEdge:
    """A stand-in for an edge's ``Center``: each edge round takes ``round_s`` on a fake
    clock and folds one update of weight 1 (its mean: ones)."""

    def __init__(self, settings, round_s: float) -> None:
        self.settings, self.round_s, self.now_s = settings, round_s, 0.0
        self.timeouts: list[float | None] = []
        self.clock = self
        self.downlink = None

    def now(self) -> float:
        return self.now_s

    async def collect(self, round_idx, params, **_kw):
        self.timeouts.append(self.settings.round_timeout_s)
        self.now_s += self.round_s
        state = WeightedMean().accumulate(
            WeightedMean().init(params.size), np.ones(params.size, np.float32), 1.0
        )
        outcome = RoundOutcome(round_idx, 1, (0,), (), (), self.now_s, True)
        return state, RoundRecord(outcome, 0, 0, None)


def test_an_edges_rounds_share_the_parents_deadline_and_an_edge_out_of_time_sends_nothing():
    cfg = load_config(overrides=[*TREE, "topology.kappa_edge=3"])
    spec = TreeSpec.of(cfg, 6)
    settings = CenterSettings(rounds=2, plan=LocalPlan(steps=1, epochs=None), round_timeout_s=10.0)
    params = np.zeros(3, np.float32)
    node = spec.edges[0]
    # 4 s per edge round within 10 s: rounds get 10 s, then 6 s, then 2 s; all three fold
    edge = _SlowEdge(settings, 4.0)
    task = TaskSpec(TaskKind.TRAIN, 0, cfg.seed, deadline_s=10.0)
    out = asyncio.run(run_periods(edge, spec, node, task, params=params, relayed=None))
    assert edge.timeouts == [10.0, 6.0, 2.0]
    assert len(out.records) == 3
    assert edge.settings is settings  # restored
    np.testing.assert_allclose(WeightedMean().finalize(out.state), 3.0)  # 3 periods of +1
    # 6 s per edge round: the third finds the deadline passed; the edge sends nothing
    edge = _SlowEdge(settings, 6.0)
    out = asyncio.run(run_periods(edge, spec, node, task, params=params, relayed=None))
    assert edge.timeouts == [10.0, 4.0]
    assert out.state.total_weight == 0
