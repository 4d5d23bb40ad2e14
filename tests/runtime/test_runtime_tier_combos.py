"""Tiers combined with sampling, quorum, central DP and secure aggregation: the
runtime's explicit tree runs what the simulator's does (or refuses it by name)."""

import asyncio
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiertree import run_regions, run_tree

from fedstrata.aggregation import MeanState
from fedstrata.api import run
from fedstrata.compress import ChainCodec, CompressionSpec
from fedstrata.config import load_config
from fedstrata.coordinator import RoundOutcome
from fedstrata.core.context import RoundContext
from fedstrata.errors import ConfigError, NodeClaimedError, PayloadError
from fedstrata.runtime import (
    CenterServer,
    GrpcLink,
    TokenTable,
    check_supported,
    deployment,
    new_token,
)
from fedstrata.runtime.downlink import DownlinkReplica, DownlinkServer, LocalModel, local_downlink
from fedstrata.runtime.partials import encode_compressed_partial, read_tier_partial
from fedstrata.runtime.records import RoundRecord, encode_partial
from fedstrata.runtime.tier_combos import accepted_clients
from fedstrata.runtime.tier_periods import TreeSpec

LEGACY = [
    "output.run_store=false",
    "sim.workers=0",
    "data.num_clients=6",
    "rounds.rounds=2",
    "model.kind=logreg",
    "client.steps=3",
    "client.epochs=null",
]


def test_legacy_tiers_refuse_clients_per_round_which_they_cannot_draw():
    dep = deployment(load_config(overrides=[*LEGACY, "rounds.clients_per_round=4"]))
    with pytest.raises(
        ConfigError, match=r"rounds\.clients_per_round=4 of 6 clients with aggregator"
    ):
        dep.center(participants=2)
    with pytest.raises(ConfigError, match=r"topology\.mode: explicit"):
        dep.edge(3)
    dep.center()  # the clients at the center: the center draws the cohort
    for every in ("null", "6"):  # every client: nothing to draw
        dep = deployment(load_config(overrides=[*LEGACY, f"rounds.clients_per_round={every}"]))
        dep.center(participants=2)
        dep.edge(3)


TREE = [
    *LEGACY,
    "rounds.clients_per_round=4",
    "topology.mode=explicit",
    'topology.edges={"e0": [0, 1, 2], "e1": [3, 4, 5]}',
    "topology.kappa_edge=2",
]
EDGES = {"e0": [0, 1, 2], "e1": [3, 4, 5]}


def test_a_quorum_of_clients_across_the_tree_equals_the_simulator():
    cfg = load_config(overrides=[*TREE, "rounds.min_clients=4"])
    sim = run(cfg).simulation
    out = asyncio.run(run_tree(deployment(cfg), EDGES))
    assert not out.result.rejections
    spec = TreeSpec.of(cfg, 6)
    for r, record in enumerate(out.result.rounds):
        # the center's round over the tiers' clients: the simulator's cohort, all accepted
        drawn = sorted(m for e in spec.edges for m in spec.members(e, spec.periods.base(r)))
        assert record.clients is not None
        assert list(record.clients.accepted) == drawn
        assert record.clients.applied
    assert out.result.params.tobytes() == sim.params.tobytes()


def test_a_round_below_the_quorum_of_clients_leaves_the_model_as_the_simulator_does():
    """Client 5 never connects: global round 1 draws it (with 0, 1, 2), so only 3 of
    its 4 selected clients are accepted, below min_clients=4, and the model stays; the
    deployment ends where the simulator's first round left it."""
    cfg = load_config(overrides=[*TREE, "rounds.min_clients=4"])
    spec = TreeSpec.of(cfg, 6)
    assert 5 in spec.members(spec.edges[1], spec.periods.base(1))
    assert 5 not in spec.members(spec.edges[1], spec.periods.base(0))
    out = asyncio.run(run_tree(deployment(cfg), {"e0": [0, 1, 2], "e1": [3, 4]}))
    first, second = out.result.rounds
    assert first.clients is not None
    assert first.clients.applied
    assert second.clients is not None
    assert not second.clients.applied
    assert list(second.clients.accepted) == [0, 1, 2]
    one = run(load_config(overrides=[*TREE, "rounds.min_clients=4", "rounds.rounds=1"]))
    assert out.result.params.tobytes() == one.simulation.params.tobytes()


def test_central_dp_through_the_edges_spends_the_simulators_epsilon_on_its_model():
    """Clients clip, edges merge, the center noises the sum of the tree's accepted
    clients and divides by the expected cohort: the simulator's central DP on a tree."""
    dp = ["topology.kappa_edge=1", "privacy.mechanism=central", "privacy.epsilon=2"]
    cfg = load_config(overrides=[*TREE, *dp])
    check_supported(cfg)
    sim = run(cfg).simulation
    out = asyncio.run(run_tree(deployment(cfg), EDGES))
    assert not out.result.rejections
    assert out.result.params.tobytes() == sim.params.tobytes()
    got = [r.privacy for r in out.result.rounds]
    want = [m.privacy for m in sim.rounds]
    assert all(g is not None for g in got)
    assert [g.epsilon_spent for g in got] == [w.epsilon_spent for w in want]
    assert [g.noise_multiplier for g in got] == [w.noise_multiplier for w in want]
    for record, metrics in zip(out.result.rounds, sim.rounds, strict=True):
        assert record.clients is not None
        assert len(record.clients.accepted) == metrics.clients_completed


def test_legacy_tiers_still_refuse_central_dp():
    dp = load_config(
        overrides=[*LEGACY, "privacy.mechanism=central", "rounds.clients_per_round=4"]
    )
    with pytest.raises(ConfigError, match=r"privacy\.mechanism='central' with aggregator tiers"):
        deployment(dp).center(participants=2)


def test_an_edges_local_model_trains_a_client_without_touching_its_replica():
    spec = CompressionSpec(quantize=8)
    relay = DownlinkServer(spec, 2)
    relay.start(np.zeros(5, np.float32))
    replica = DownlinkReplica()
    held = replica.apply(relay.message(replica.ask()), 5)
    version = replica.version
    local = np.arange(5, dtype=np.float32)
    served = local_downlink(relay, local, fresh=False)
    assert isinstance(served, LocalModel)
    assert local_downlink(relay, local, fresh=True) is relay
    got = replica.apply(served.message(replica.ask()), 5)
    assert got.tobytes() == local.tobytes()
    assert replica.version == version
    assert replica.params is not None
    assert replica.params.tobytes() == held.tobytes()
    with pytest.raises(PayloadError, match="local model has"):
        replica.apply(served.message(replica.ask()), 4)


async def _hold(link, node, center, cid):
    """Open ``link``'s session naming ``node``; return it once the center holds the
    claim (with the task awaiting its first task, to cancel)."""
    tasks = link.session(live_clients=3, node=node)
    waiting = asyncio.ensure_future(anext(tasks))
    while center.claims.held.get(node) != cid:
        await asyncio.sleep(0.01)
    return tasks, waiting


async def _drop(tasks, waiting):
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await tasks.aclose()


def test_a_second_aggregator_claiming_an_edge_is_refused_with_a_typed_error():
    dep = deployment(load_config(overrides=TREE))
    tokens = {i: new_token() for i in range(9)}

    async def main():
        center = dep.center(participants=2)
        async with CenterServer(center, TokenTable(tokens)) as top:
            async with GrpcLink(top.target, 6, tokens[6]) as first:
                held = await _hold(first, "e0", center, 6)
                async with GrpcLink(top.target, 7, tokens[7]) as second:
                    with pytest.raises(NodeClaimedError, match=r"node 'e0'.*tier 6"):
                        await anext(second.session(live_clients=3, node="e0"))
                    await _drop(*await _hold(second, "e1", center, 7))  # another edge
                await _drop(*held)
            while center.claims.held:  # the sessions ended: the edges are free
                await asyncio.sleep(0.01)
            center.finish()

    asyncio.run(main())


@pytest.mark.parametrize(
    "dp", [[], ["privacy.mechanism=distributed", "privacy.epsilon=2"]], ids=["plain", "dist-dp"]
)
def test_secure_aggregation_with_sampling_lets_a_lone_client_sit_out_as_the_simulator(dp):
    """4 of 6 clients: global round 1 selects [0, 1, 2] under e0 and only 5 under e1,
    which sits out (no cluster sum can hide it); e0's secure sum runs over its three."""
    over = ["topology.kappa_edge=1", "secagg.enabled=true", "secagg.dropout_rate=0.0"]
    cfg = load_config(overrides=[*TREE, *over, *dp])
    check_supported(cfg)
    spec = TreeSpec.of(cfg, 6)
    assert [spec.members(e, 1) for e in spec.edges] == [[0, 1, 2], [5]]
    sim = run(cfg).simulation
    out = asyncio.run(run_tree(deployment(cfg), EDGES))
    assert out.result.params.tobytes() == sim.params.tobytes()
    e1 = out.edges["e1"]
    assert e1 is not None
    assert [r for r, why in e1.refused if "client 5 is alone" in why] == [1]
    # e1 ran its secure round 0 over its selected clients and trained nothing in round 1
    assert [sorted(rec.outcome.accepted) for rec in e1.rounds] == [[3, 4]]
    assert sim.rounds[1].clients_completed == 3


@pytest.mark.parametrize(
    ("edges", "per_round"),
    [({"e0": [0, 1, 2, 3, 4], "e1": [5]}, "null"), (EDGES, "2")],
    ids=["an-edge-of-one", "clusters-empty"],
)
def test_secure_edges_of_fewer_than_two_selected_clients_match_the_simulator(edges, per_round):
    """An edge of one client always sits out. Two clients per round (seed 0): round 0
    selects [0] and [5], every cluster is empty, no sum is decoded and the model stays;
    round 1 selects [0, 1] under e0 and nobody under e1 (an empty cluster), as in the
    simulator."""
    over = [
        "topology.kappa_edge=1", "secagg.enabled=true", "secagg.dropout_rate=0.0",
        f"topology.edges={edges}", f"rounds.clients_per_round={per_round}", "seed=0",
    ]  # fmt: skip
    cfg = load_config(overrides=[*TREE, *over])
    check_supported(cfg)
    sim = run(cfg).simulation
    dep = deployment(cfg)
    out = asyncio.run(run_tree(dep, edges))
    assert out.result.params.tobytes() == sim.params.tobytes()
    if per_round == "2":
        spec = TreeSpec.of(cfg, 6)
        assert [[spec.members(e, r) for e in spec.edges] for r in (0, 1)] == [
            [[0], [5]],
            [[0, 1], []],
        ]
        assert [m.clients_completed for m in sim.rounds] == [0, 2]
        assert out.result.params.tobytes() != dep.initial_params().tobytes()


def test_central_dp_and_a_quorum_through_regions_equal_the_simulator():
    """Edges report their clients to their region, which reports them to the center:
    the Poisson cohort's accepted clients, the noise and ε are the simulator's."""
    regions = {"r0": {"e0": [0, 1], "e1": [2, 3]}, "r1": {"e2": [4, 5], "e3": [6, 7]}}
    tree = [
        *LEGACY, "data.num_clients=8", "rounds.clients_per_round=6", "topology.mode=explicit",
        f"topology.regions={regions}", "privacy.mechanism=central", "privacy.epsilon=2",
        "rounds.min_clients=3",
    ]  # fmt: skip
    cfg = load_config(overrides=tree)
    sim = run(cfg).simulation
    out = asyncio.run(run_regions(deployment(cfg), regions))
    assert out.result.params.tobytes() == sim.params.tobytes()
    got = [r.clients for r in out.result.rounds]
    assert all(c is not None and c.applied for c in got)
    assert [len(c.accepted) for c in got if c is not None] == [
        m.clients_completed for m in sim.rounds
    ]
    spent = [r.privacy.epsilon_spent for r in out.result.rounds if r.privacy is not None]
    assert spent == [m.privacy.epsilon_spent for m in sim.rounds if m.privacy is not None]


def test_a_quorum_of_clients_under_secure_aggregation_equals_the_simulator():
    """Edges name their survivors in their cluster reports. min_clients=4 of 4 sampled:
    global round 1 has client 5 alone under e1 (it sits out), so 3 are accepted, below
    the quorum, and the model stays, as in the simulator."""
    over = [
        "topology.kappa_edge=1", "secagg.enabled=true", "secagg.dropout_rate=0.0",
        "rounds.min_clients=4",
    ]  # fmt: skip
    cfg = load_config(overrides=[*TREE, *over])
    sim = run(cfg).simulation
    out = asyncio.run(run_tree(deployment(cfg), EDGES))
    assert out.result.params.tobytes() == sim.params.tobytes()
    first, second = (r.clients for r in out.result.rounds)
    assert first is not None
    assert second is not None
    assert (list(first.accepted), first.applied) == ([0, 2, 3, 4], True)
    assert (list(second.accepted), second.applied) == ([0, 1, 2], False)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(0, 10**6), max_size=8, unique=True),
    st.integers(1, 9),
    st.integers(0, 2**16),
)
def test_a_partial_carries_its_tiers_accepted_clients_exactly(clients, size, seed):
    """Law: a partial's reported clients round-trip with it, exact or re-compressed,
    and the partial itself is unchanged by carrying them."""
    rng = np.random.default_rng(seed)
    state = MeanState(rng.normal(size=size), total_weight=2.5, count=len(clients) or 1)
    back, got = read_tier_partial(encode_partial(state, clients))
    assert got == tuple(clients)
    assert isinstance(back, MeanState)
    assert back.weighted_sum.tobytes() == state.weighted_sum.tobytes()
    assert read_tier_partial(encode_partial(state))[1] is None
    codec = ChainCodec(CompressionSpec(quantize=8), size)
    ctx = RoundContext(0, seed).for_client(1)
    packed, got = read_tier_partial(encode_compressed_partial(state, codec, ctx, clients))
    assert got == tuple(clients)
    assert packed.total_weight == state.total_weight


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sets(st.integers(0, 12)), min_size=1, max_size=4))
def test_a_client_is_accepted_for_the_parent_only_if_accepted_in_every_period(periods):
    """Law (the simulator's worst fate): the clients a node reports after its periods
    are those accepted in every one of them, sorted."""
    records = [
        RoundRecord(RoundOutcome(i, len(a), tuple(sorted(a)), (), (), 0.0, True), 0, 0, None)
        for i, a in enumerate(periods)
    ]
    assert accepted_clients(records) == tuple(sorted(set.intersection(*periods)))
