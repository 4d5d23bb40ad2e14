"""Every scenario preset loads and runs at its quick setting (issue 18: in CI)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedstrata.api import run
from fedstrata.config import list_presets, load_config
from fedstrata.scenarios import SCENARIOS, arm_overrides

_TARGETED = {"privacy-staged", "automotive-roadmap"}  # figures that need a target accuracy


def test_every_scenario_is_listed_as_a_preset() -> None:
    assert set(SCENARIOS) <= set(list_presets())


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
    figure = s.measure(config, rounds)
    if name not in _TARGETED:
        assert figure is not None
        assert math.isfinite(figure)
        assert figure > 0
