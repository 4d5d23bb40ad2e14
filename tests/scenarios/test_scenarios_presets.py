"""Every scenario preset loads and runs at its quick setting (issue 18: in CI)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedstrata.api import run
from fedstrata.config import list_presets, load_config
from fedstrata.scenarios import SCENARIOS, arm_overrides

_TARGETED = {"privacy-staged", "automotive-roadmap"}  # figures that need a target accuracy
_FEATURE_ON = {  # the evidence each preset's features leave in its first round's record
    "finance-100-branches": lambda m: m.codec is not None and m.codec.uplink_ratio > 1,
    "logistics-hierarchy": lambda m: m.tiers is not None and m.tiers.edge_ingress_bytes > 0,
    "manufacturing-heterogeneity": lambda m: m.schedule is not None and m.schedule.mean_steps != 4,
    "secagg-1000": lambda m: m.secagg is not None and m.secagg.protocol_s is not None,
    "privacy-staged": lambda m: m.privacy is not None and m.privacy.epsilon_spent > 0,
    "ecommerce-availability": lambda m: m.clients_selected > 50,
    "automotive-roadmap": lambda m: m.schedule is not None and m.codec is not None,
}


def test_every_scenario_is_listed_as_a_preset() -> None:
    assert set(SCENARIOS) <= set(list_presets())
    assert set(_FEATURE_ON) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_preset_runs_quick_and_shows_its_figure(name: str, tmp_path: Path) -> None:
    s = SCENARIOS[name]
    overrides = arm_overrides(s, "fedstrata", tmp_path, quick=True, report=False)
    config = load_config(preset=name, overrides=[*overrides, "rounds.rounds=1"])
    result = run(config)
    rounds = result.simulation.rounds
    assert len(rounds) == 1
    assert rounds[0].clients_completed >= 1
    assert result.run_dir is not None
    assert (result.run_dir / "metrics.sqlite").exists()
    assert _FEATURE_ON[name](rounds[0]), rounds[0]
    figure = s.measure(config, rounds)
    if name not in _TARGETED:
        assert figure is not None
        assert math.isfinite(figure)
        assert figure > 0
