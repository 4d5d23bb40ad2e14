"""Issue 12 part 4: a tree topology composes with the other features, from the config.

Each test runs ``fedstrata.api.run`` on a two-region tree and checks that the feature
is honoured and recorded in the run's metrics (no setting accepted and ignored).
"""

import sys
from collections import Counter

import numpy as np
import pytest
from dp_accounting import dp_event as dpa
from dp_accounting.pld import pld_privacy_accountant

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.errors import ConfigError

REGIONS = {"r0": {"e0": [0, 1, 2, 3], "e1": [4, 5, 6, 7]}, "r1": {"e2": [8, 9, 10, 11]}}
TREE = [
    "output.run_store=false",
    "sim.workers=0",
    "rounds.rounds=2",
    "data.num_clients=12",
    "rounds.clients_per_round=null",
    "topology.mode=explicit",
    f"topology.regions={REGIONS}",
]


def tree_run(*extra: str):
    return run(load_config(overrides=[*TREE, *extra])).simulation


@pytest.fixture(scope="module")
def plain():
    return tree_run()


def test_cohort_size_is_drawn_each_global_round():
    """Issue 12 part 4: rounds.clients_per_round on a tree (was accepted and ignored)."""
    res = tree_run("rounds.clients_per_round=5")
    for m in res.rounds:
        assert m.clients_selected == m.clients_completed == m.tiers.client_updates == 5


def test_deadline_drops_late_clients(plain):
    """Issue 12 part 4: rounds.deadline_s on a tree (was accepted and ignored)."""
    times = sorted(m.sim_round_s for m in plain.rounds)
    res = tree_run(f"rounds.deadline_s={0.5 * times[0]}")
    assert all(m.clients_late > 0 for m in res.rounds)
    assert all(m.clients_completed + m.clients_late == 12 for m in res.rounds)


def test_client_and_partial_compression_cut_the_tiers_bytes(plain):
    """Issue 12 part 4: the uplink codec at the clients, partial codec above."""
    res = tree_run("compression.preset=int8", "topology.partial_compression.preset=int8")
    for c, d in zip(res.rounds, plain.rounds, strict=True):
        assert c.codec.uplink_ratio > 3.5
        assert c.tiers.edge_ingress_bytes * 3.5 < d.tiers.edge_ingress_bytes
        assert c.tiers.center_ingress_bytes * 3.5 < d.tiers.center_ingress_bytes
    assert res.final_accuracy == pytest.approx(plain.final_accuracy, abs=0.1)


def test_downlink_compression_costs_its_messages(plain):
    """Issue 12 part 4: downlink on a tree (was accepted and ignored)."""
    res = tree_run("downlink.preset=int8")
    assert res.rounds[1].bytes_down * 2 < plain.rounds[1].bytes_down
    assert res.rounds[1].downlink_s < plain.rounds[1].downlink_s


def test_central_dp_spends_the_accountants_epsilon_and_stops():
    """Issue 12 part 4: central DP on a tree; ε as dp-accounting composes it."""
    res = tree_run(
        "rounds.rounds=5", "privacy.mechanism=central", "privacy.epsilon=4",
        "privacy.schedule=uniform", "privacy.planned_rounds=2", "evaluation.every=0",
    )  # fmt: skip
    assert res.stopped_reason is not None
    assert "budget" in res.stopped_reason
    sigmas = [m.privacy.noise_multiplier for m in res.rounds]
    q = res.rounds[0].privacy.sampling_rate
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for sigma, count in Counter(sigmas).items():
        accountant.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), count)
    spent = res.rounds[-1].privacy.epsilon_spent
    assert spent == pytest.approx(accountant.get_epsilon(1e-5), rel=0.01)
    assert spent <= 4.0


def test_median_runs_at_the_center_over_the_regions(plain):
    """Issue 12 part 4: server.aggregator=median on a tree."""
    res = tree_run("server.aggregator=median")
    assert not np.array_equal(res.params, plain.params)
    assert all(m.clients_completed == 12 for m in res.rounds)


_RULES = """
import numpy as np

CALLS = []

def median(vectors, weights):
    out = np.median(vectors, axis=0)
    CALLS.append((vectors.copy(), weights.copy(), out))
    return out

def weighted_mean(vectors, weights):
    return (weights[:, None] * vectors).sum(0) / weights.sum()

def zero(vectors, weights):
    return np.zeros(vectors.shape[1], np.float32)
"""


def test_your_rule_runs_at_the_center_over_the_regions_means(plain, tmp_path):
    """Issue 12 part 4: server.aggregator=pkg.mod:rule on a tree (was refused): the
    rule gets one partial mean per region with the region's weight, and the center
    applies its output."""
    (tmp_path / "tree_rules.py").write_text(_RULES)
    own = [f"project_dir={tmp_path}"]
    mean = tree_run(*own, "server.aggregator=tree_rules:weighted_mean")
    np.testing.assert_allclose(mean.params, plain.params, rtol=1e-5, atol=1e-6)
    start = tree_run(*own, "rounds.rounds=1", "server.aggregator=tree_rules:zero").params
    res = tree_run(*own, "rounds.rounds=1", "server.aggregator=tree_rules:median")
    ((vectors, weights, out),) = sys.modules["tree_rules"].CALLS
    assert vectors.shape[0] == len(REGIONS)
    assert weights[0] > weights[1]  # r0 holds two edges of four clients, r1 one
    np.testing.assert_allclose(res.params, start + out, rtol=1e-6, atol=1e-7)
    assert all(m.clients_completed == 12 for m in res.rounds)


def test_allocation_meets_the_deadline_equal_work_misses():
    """Issue 12 part 4: scheduling.allocation sizes each client's work on a tree."""
    deadline = ["rounds.deadline_s=0.2"]
    equal = tree_run(*deadline)
    sized = tree_run(*deadline, "scheduling.allocation=true")
    assert sum(m.clients_late for m in equal.rounds) > 0
    assert all(m.clients_late == 0 and m.clients_completed == 12 for m in sized.rounds)
    assert all(m.schedule is not None and m.schedule.mean_steps > 0 for m in sized.rounds)


def test_overselection_invites_more_than_the_cohort():
    """Issue 12 part 4: scheduling.overselect through the coordinator's selector."""
    res = tree_run(
        "rounds.clients_per_round=4", "scheduling.overselect=0.5",
        "scheduling.allocation=true", "rounds.deadline_s=0.3",
    )  # fmt: skip
    assert all(m.clients_selected == m.schedule.devices == 6 for m in res.rounds)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["privacy.mechanism=central", "topology.kappa_edge=2"], "accountant counts one"),
        (["privacy.mechanism=central", "server.aggregator=median"], "robust rule"),
        (["scheduling.allocation=true", "rounds.deadline_s=1", "topology.kappa_region=2"],
         "one local training"),
        (["secagg.enabled=true", "topology.kappa_edge=2"], "two-tier masks"),
    ],
)  # fmt: skip
def test_refused_combinations_name_their_reason(extra, reason):
    """Issue 12 part 3: what the tree cannot honour is refused at config time."""
    with pytest.raises(ConfigError, match=reason):
        load_config(overrides=[*TREE, *extra])


EDGES = {e: ids for edges in REGIONS.values() for e, ids in edges.items()}
NO_REGION = [o for o in TREE if not o.startswith("topology.regions")]


def test_edges_under_the_center_skip_the_region_hop(plain):
    """topology.edges: the same edges straight under the center (a deployment's tree):
    nothing goes through a region, so its ingress and its downloads are not counted."""
    res = run(load_config(overrides=[*NO_REGION, f"topology.edges={EDGES}"])).simulation
    for m, p in zip(res.rounds, plain.rounds, strict=True):
        assert m.tiers.region_ingress_bytes == 0 < p.tiers.region_ingress_bytes
        assert m.tiers.edge_ingress_bytes == p.tiers.edge_ingress_bytes
        # the edges' partials reach the center instead of the regions, and the regions'
        # partials are gone
        assert m.tiers.center_ingress_bytes == p.tiers.region_ingress_bytes
        assert m.bytes_up == p.bytes_up - p.tiers.center_ingress_bytes
        assert m.bytes_down < p.bytes_down  # two regions got the model, then their edges
        assert m.clients_completed == p.clients_completed == 12
    np.testing.assert_allclose(res.params, plain.params, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ([f"topology.regions={REGIONS}"], "not both"),
        (["topology.kappa_region=2"], "kappa_region"),
        (["topology.mode=auto"], "explicit"),
        (["topology.mode=flat"], "topology.edges"),
    ],
)
def test_edges_refuse_what_they_cannot_mean(extra, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[*NO_REGION, f"topology.edges={EDGES}", *extra])
