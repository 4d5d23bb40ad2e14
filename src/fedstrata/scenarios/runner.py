"""Run a scenario's two arms through :func:`fedstrata.api.run` and write its report.

``out/<arm>/`` holds each arm's run directory (and its device registry, if any);
``out/compare.html`` is ``fedstrata compare`` over the two runs, ``out/scenario.md``
the published figure beside the measured ones, ``out/scenario.json`` the same as data.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from fedstrata.api import run as run_federation
from fedstrata.config import load_config
from fedstrata.monitoring.compare import write_comparison
from fedstrata.monitoring.events import RoundMetrics
from fedstrata.scenarios.compare import ArmOutcome, Comparison, render_markdown
from fedstrata.scenarios.scenario import Scenario

__all__ = ["arm_overrides", "run_arm", "run_scenario"]

# Tiny quick-mode arms start no worker processes: their start-up would dominate.
_QUICK_SIM = ("sim.workers=0", "sim.start_method=inprocess")


def arm_overrides(
    scenario: Scenario, arm: str, arm_dir: Path, *, quick: bool, report: bool
) -> list[str]:
    """The overrides of one arm (``baseline`` or ``fedstrata``), in the order applied."""
    own = scenario.baseline if arm == "baseline" else scenario.optimized
    common = [
        f"name={scenario.name}-{arm}",
        f"output.dir={arm_dir}",
        "output.progress=false",
        f"output.report={str(report).lower()}",
    ]
    extra = [*scenario.quick, *_QUICK_SIM] if quick else []
    return [t.replace("{arm_dir}", str(arm_dir)) for t in (*common, *own, *extra)]


def run_arm(
    scenario: Scenario, arm: str, out: Path, *, quick: bool, report: bool = False
) -> ArmOutcome:
    """Run one arm in ``out/<arm>`` (emptied first) and read its figure.

    Raises:
        ConfigError: the preset with the arm's overrides does not validate.
    """
    arm_dir = out / arm
    shutil.rmtree(arm_dir, ignore_errors=True)
    arm_dir.mkdir(parents=True)
    config = load_config(
        preset=scenario.name,
        overrides=arm_overrides(scenario, arm, arm_dir, quick=quick, report=report),
    )
    start = time.perf_counter()
    result = run_federation(config, run_name=f"{scenario.name}-{arm}")
    wall_s = time.perf_counter() - start
    rounds: list[RoundMetrics] = result.simulation.rounds
    return ArmOutcome(
        label=arm,
        figure=scenario.measure(config, rounds),
        rounds=len(rounds),
        final_accuracy=result.simulation.final_accuracy,
        sim_time_s=result.simulation.sim_time_s,
        wall_s=wall_s,
        run_dir=None if result.run_dir is None else str(result.run_dir),
        extras={name: read(config, rounds) for name, read in scenario.extras.items()},
    )


def run_scenario(scenario: Scenario, out: Path, *, quick: bool = False) -> Comparison:
    """Run both arms side by side and write the report files under ``out``.

    Raises:
        ConfigError: an arm's configuration does not validate.
    """
    out.mkdir(parents=True, exist_ok=True)
    comparison = Comparison(
        scenario,
        run_arm(scenario, "baseline", out, quick=quick),
        run_arm(scenario, "fedstrata", out, quick=quick),
        quick,
    )
    (out / "scenario.md").write_text(render_markdown(comparison))
    (out / "scenario.json").write_text(json.dumps(comparison.to_json(), indent=2) + "\n")
    dirs = [a.run_dir for a in (comparison.baseline, comparison.optimized)]
    if all(d is not None for d in dirs):
        write_comparison([Path(d) for d in dirs if d is not None], out / "compare.html")
    return comparison
