"""The scenario runner's comparison logic and figures, on made-up arms and rounds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.monitoring.events import RoundMetrics
from fedstrata.scenarios import SCENARIOS, ArmOutcome, Comparison, Scenario, arm_overrides
from fedstrata.scenarios.compare import render_markdown
from fedstrata.scenarios.figures import (
    cohort_delivery,
    mean_round_s,
    rounds_to_accuracy,
    time_to_accuracy,
)


def make_round(r: int, *, accuracy: float | None = None, completed: int = 10,
               round_s: float = 2.0) -> RoundMetrics:  # fmt: skip
    return RoundMetrics(
        round_idx=r, accuracy=accuracy, loss=None, train_loss=None,
        clients_selected=max(completed, 10), clients_completed=completed, clients_failed=0,
        clients_late=0, bytes_up=0, bytes_down=0, sim_round_s=round_s,
        sim_time_s=round_s * (r + 1), wall_round_s=0.0, compute_s=0.0, downlink_s=0.0,
        uplink_s=0.0,
    )  # fmt: skip


def make_scenario(**changes: Any) -> Scenario:
    base = Scenario(
        name="quickstart", case="a case", figure="round time", unit="s", better="lower",
        published_before=47.0, published_after=16.0, published_relative=None,
        baseline_name="flat", baseline=("compression.preset=none",),
        optimized=("output.dir={arm_dir}/x",), quick=("rounds.rounds=2",),
        measure=lambda cfg, rounds: mean_round_s(rounds),
        scaling="1:1", simulated="time", real="training",
    )  # fmt: skip
    return replace(base, **changes)


def arm(label: str, figure: float | None) -> ArmOutcome:
    return ArmOutcome(label, figure, rounds=2, final_accuracy=0.5, sim_time_s=1.0, wall_s=0.1)


def test_ratio_is_fedstrata_over_baseline_and_direction_follows_better() -> None:
    c = Comparison(make_scenario(), arm("baseline", 40.0), arm("fedstrata", 10.0), quick=False)
    assert c.ratio == pytest.approx(0.25)
    assert c.improved is True
    higher = replace(c, scenario=make_scenario(better="higher"))
    assert higher.improved is False
    assert c.note() is None


@given(st.floats(0.01, 1e6), st.floats(0.01, 1e6))
def test_ratio_times_baseline_is_measured(base: float, opt: float) -> None:
    c = Comparison(make_scenario(), arm("baseline", base), arm("fedstrata", opt), quick=True)
    assert c.ratio is not None
    assert c.ratio * base == pytest.approx(opt)
    assert c.improved == (opt < base)


@pytest.mark.parametrize(("base", "opt"), [(None, 1.0), (1.0, None), (0.0, 1.0)])
def test_missing_or_zero_figures_give_no_ratio(base: float | None, opt: float | None) -> None:
    c = Comparison(make_scenario(), arm("baseline", base), arm("fedstrata", opt), quick=True)
    assert c.ratio is None
    assert c.improved is None
    out = c.to_json()
    assert out["ratio"] is None
    if base is None or opt is None:
        assert "quick mode" in (c.note() or "")


def test_json_puts_published_beside_measured() -> None:
    c = Comparison(make_scenario(), arm("baseline", 40.0), arm("fedstrata", 10.0), quick=False)
    out = c.to_json()
    assert out["published"] == 16.0
    assert out["published_before"] == 47.0
    assert out["published_ratio"] == pytest.approx(16 / 47)
    assert (out["measured"], out["baseline"]) == (10.0, 40.0)
    assert {"unit", "simulated", "real", "scaling", "baseline_name"} <= set(out)
    text = render_markdown(c)
    assert "| published (their system) | 47 | 16 |" in text
    assert "| measured here | 40 | 10 | 0.25 |" in text


def test_relative_only_publication() -> None:
    s = make_scenario(published_before=None, published_after=None, published_relative=0.69)
    assert s.published is None
    assert s.published_ratio == 0.69


def test_scenario_needs_a_published_figure_and_key_value_overrides() -> None:
    with pytest.raises(ConfigError, match="published figure"):
        make_scenario(published_before=None, published_after=None)
    with pytest.raises(ConfigError, match="lacks '='"):
        make_scenario(baseline=("compression.preset",))


def test_arm_overrides_place_the_arm_dir_and_quick_last(tmp_path: Path) -> None:
    s = make_scenario()
    full = arm_overrides(s, "fedstrata", tmp_path, quick=False, report=False)
    assert f"output.dir={tmp_path}/x" in full
    assert "rounds.rounds=2" not in full
    quick = arm_overrides(s, "baseline", tmp_path, quick=True, report=False)
    assert "compression.preset=none" in quick
    assert quick.index("rounds.rounds=2") > quick.index("compression.preset=none")
    assert "sim.workers=0" in quick


def test_time_and_rounds_to_accuracy_take_the_first_hit() -> None:
    rounds = [make_round(0, accuracy=0.3), make_round(1), make_round(2, accuracy=0.7),
              make_round(3, accuracy=0.9)]  # fmt: skip
    assert time_to_accuracy(rounds, 0.6) == pytest.approx(6.0)
    assert rounds_to_accuracy(rounds, 0.6) == 3.0
    assert time_to_accuracy(rounds, 0.95) is None
    assert rounds_to_accuracy([], 0.1) is None


def test_cohort_delivery_caps_overselected_rounds_at_one() -> None:
    config = load_config(preset="quickstart", overrides=["rounds.clients_per_round=10"])
    rounds = [make_round(0, completed=12), make_round(1, completed=8)]
    assert cohort_delivery(config, rounds) == pytest.approx(0.9)


def test_every_scenario_is_a_preset_and_its_arms_validate(tmp_path: Path) -> None:
    for s in SCENARIOS.values():
        for label in ("baseline", "fedstrata"):
            for quick in (False, True):
                load_config(
                    preset=s.name,
                    overrides=arm_overrides(s, label, tmp_path, quick=quick, report=False),
                )


def test_secondary_figures_are_compared_per_arm() -> None:
    s = make_scenario(extras={"throughput (eps)": lambda cfg, rounds: None})
    base = replace(arm("baseline", 1.0), extras={"throughput (eps)": 100.0})
    opt = replace(arm("fedstrata", 2.0), extras={"throughput (eps)": 230.0})
    c = Comparison(s, base, opt, quick=False)
    extra = c.to_json()["extras"]["throughput (eps)"]
    assert extra["baseline"] == 100.0
    assert extra["ratio"] == pytest.approx(2.3)
    assert "| throughput (eps) (secondary) | 100 | 230 | 2.3 |" in render_markdown(c)
    missing = Comparison(s, arm("baseline", 1.0), opt, quick=False)
    assert missing.extras()["throughput (eps)"]["ratio"] is None
