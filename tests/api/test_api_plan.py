"""``fedstrata plan`` predicts what ``fedstrata run`` simulates (issue 11 defect 18)."""

import itertools

import numpy as np
import pytest

from fedstrata.api import run
from fedstrata.api.plan import describe_plan, predict
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
    """Issue 11 defect 18: the planner's round time is within 20% of the simulator's."""
    overrides = [f"rounds.rounds={ROUNDS}", *FAST]
    cfg = load_config(preset=preset, overrides=overrides)
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
    cfg = load_config(preset=preset, overrides=overrides)
    predicted = predict(cfg).tree_s
    assert predicted is not None
    assert predicted == pytest.approx(_measured_round_s_of(cfg), rel=0.2)
