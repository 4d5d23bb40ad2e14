"""``fedstrata plan`` predicts what ``fedstrata run`` simulates (issue 11 defect 18)."""

import itertools

import numpy as np
import pytest

from fedstrata.api import run
from fedstrata.api.plan import describe_plan, predict, unmodelled
from fedstrata.config import list_presets, load_config
from fedstrata.coordinator.round_time import expected_round_s, latest_arrival_weights
from fedstrata.errors import ConfigError

FAST = [
    "output.run_store=false",
    "output.progress=false",
    "sim.workers=0",
    "rounds.eval_every=1000",
]
ROUNDS = 20


def _measured_round_s_of(cfg) -> float:
    result = run(cfg)
    return float(np.mean([m.sim_round_s for m in result.simulation.rounds]))


def _measured_round_s(overrides: list[str]) -> float:
    return _measured_round_s_of(load_config(overrides=overrides))


@pytest.mark.parametrize("preset", list_presets())
def test_plan_agrees_with_run_on_every_preset(preset):
    """Issue 11 defect 18: the planner's round time is within 20% of the simulator's;
    a preset with a feature it does not model says so in the plan instead."""
    overrides = [f"rounds.rounds={ROUNDS}", *FAST]
    cfg = load_config(preset=preset, overrides=overrides)
    missing = unmodelled(cfg)
    if missing:
        assert f"not modelled: {', '.join(missing)}" in describe_plan(cfg)
        return
    predicted = predict(cfg).flat_s
    measured = _measured_round_s_of(cfg)
    assert predicted == pytest.approx(measured, rel=0.2), (preset, predicted, measured)


@pytest.mark.parametrize(
    "extra",
    [
        ["rounds.deadline_s=0.22"],
        ["devices.availability=0.5", "rounds.clients_per_round=null"],
        ["privacy.mechanism=central"],
    ],
    ids=["deadline", "availability", "poisson"],
)
def test_plan_agrees_with_run_on_deadlines_availability_and_poisson(extra):
    """Issue 11 defect 18: the cohort and deadline rules of the simulator are predicted."""
    overrides = [f"rounds.rounds={ROUNDS}", *FAST, *extra]
    cfg = load_config(preset="quickstart", overrides=overrides)
    assert predict(cfg).flat_s == pytest.approx(_measured_round_s(overrides), rel=0.2)


def test_plan_prints_each_prediction_once():
    """Issue 11 defect 18: a flat config printed its flat prediction twice."""
    text = describe_plan(load_config(preset="quickstart"))
    assert text.count("predicted global round") == 1
    tree = describe_plan(
        load_config(
            preset="quickstart", overrides=["topology.mode=auto", "rounds.clients_per_round=null"]
        )
    )
    assert tree.count("predicted global round, flat") == 1
    assert tree.count("predicted global round, auto") == 1


def test_expected_latest_arrival_matches_enumeration():
    t = np.random.default_rng(1).random(7)
    combos = itertools.combinations(range(7), 3)
    exact = np.mean([t[list(c)].max() for c in combos])
    assert expected_round_s(t, cohort=3) == pytest.approx(exact)
    assert expected_round_s(t, cohort=3, deadline_s=0.5) <= 0.5
    assert expected_round_s(t) == pytest.approx(t.max())
    poisson = latest_arrival_weights(5, poisson_rate=0.3)
    assert poisson.sum() == pytest.approx(1 - 0.7**5)  # an empty cohort takes no time
    with pytest.raises(ConfigError, match="poisson_rate"):
        latest_arrival_weights(5, poisson_rate=0.0)


@pytest.mark.parametrize("preset", list_presets())
def test_plan_agrees_with_run_on_every_preset_as_a_tree(preset):
    """Issue 11 defect 18: with ``topology.mode: auto`` the tree prediction holds too."""
    overrides = ["rounds.rounds=2", "topology.mode=auto", "topology.kappa_edge=2", *FAST]
    overrides.append("rounds.clients_per_round=null")  # the tree trains every client
    try:
        cfg = load_config(preset=preset, overrides=overrides)
    except ConfigError as exc:  # a preset whose features a tree refuses
        pytest.skip(f"{preset} does not run as an auto tree: {exc}")
    if unmodelled(cfg):  # its plan says so (checked by the flat test)
        pytest.skip(f"{preset}: the plan does not model {', '.join(unmodelled(cfg))}")
    predicted = predict(cfg).tree_s
    assert predicted is not None
    assert predicted == pytest.approx(_measured_round_s_of(cfg), rel=0.2)


def _first_round_s(cfg) -> float:
    return run(cfg).simulation.rounds[0].sim_round_s


EXACT = [
    *FAST,
    "rounds.rounds=1",
    "rounds.clients_per_round=null",  # every client, every round: no cohort to average over
    "data.num_clients=8",
    "client.epochs=null",
    "client.steps=2",
]


def test_plan_equals_the_flat_clock_when_every_client_is_selected():
    """Issue 12: with the whole population selected, always online, no deadline, dense
    updates, ``fedstrata plan``'s flat round is the simulator's first round to the bit:
    both time every client with ``ProfileTable.legs_s`` (``core.timing``) and the round
    ends at the latest arrival. (With a random cohort the plan is its expectation.)"""
    cfg = load_config(preset="quickstart", overrides=EXACT)
    assert predict(cfg).flat_s == _first_round_s(cfg)


def _dyadic_profiles(path) -> str:
    """Eight devices, FLOP/s powers of two, own links far above the tier links."""
    rows = ["device_id,flops,memory_gb,uplink_mbps,downlink_mbps,latency_ms,availability"]
    rows += [f"{i},{2.0 ** (24 + i % 3)},4,1e5,1e5,{125 * (1 + i % 2)},1.0" for i in range(8)]
    path.write_text("\n".join(rows) + "\n")
    return f"devices.profiles_path={path}"


TREE = [
    "topology.mode=explicit",
    "topology.regions={r0: {e0: [0, 1], e1: [2, 3]}, r1: {e2: [4, 5], e3: [6, 7]}}",
    "topology.kappa_edge=2",
    "topology.kappa_region=2",
]
POWERS_OF_TWO = [  # 2**23, 2**22, 2**21 b/s; 1/8, 1/4, 1/2 s
    "topology.lan_mbps=8.388608",
    "topology.metro_mbps=4.194304",
    "topology.wan_mbps=2.097152",
    "topology.lan_ms=125",
    "topology.metro_ms=250",
    "topology.wan_ms=500",
]
DECIMAL = [
    "topology.lan_mbps=10",
    "topology.metro_mbps=5",
    "topology.wan_mbps=3",
    "topology.lan_ms=1",
    "topology.metro_ms=5",
    "topology.wan_ms=20",
]


@pytest.mark.parametrize(("links", "rel"), [(POWERS_OF_TWO, 0.0), (DECIMAL, 1e-12)])
def test_plan_equals_the_tree_clock_where_its_closed_forms_are_exact(tmp_path, links, rel):
    """Issue 12: the topology planner's closed forms (``core.timing``: equal shares of a
    broadcast, ``makespan_bound`` for an ingress, one hop latency per node) are the
    tree simulator's event-driven fair sharing when no sender's own link binds and a
    node's hop latencies are equal (explicit tree: the tier links' latencies). Every
    client selected, two edge rounds per region round, two region rounds per round.

    With binary-exact links, FLOP/s and latencies the planner's relative clock and the
    simulator's absolute one round alike and agree to the bit; with decimal ones they
    differ only in the order of the floating-point sums. With a latency matrix (a
    planned tree) the planner charges every upload into a node its slowest hop's
    latency, an upper bound; when senders' caps bind, ``makespan_bound`` is a lower
    bound of the fair-share finish: there the plan is an estimate (the tests above).
    """
    overrides = [*EXACT, _dyadic_profiles(tmp_path / "devices.csv"), *TREE, *links]
    cfg = load_config(preset="quickstart", overrides=overrides)
    predicted = predict(cfg).tree_s
    assert predicted is not None
    assert predicted == pytest.approx(_first_round_s(cfg), rel=rel, abs=0.0)
