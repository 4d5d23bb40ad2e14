"""The published enterprise cases (issue 18) reproduced side by side.

A :class:`Scenario` names a preset, the strongest realistic baseline and fedstrata's
configuration of it as overrides, the figure to read from the runs, and what is
simulated and what is real; :func:`run_scenario` runs both arms and writes a report
with the published figure beside the measured ones (``fedstrata scenario NAME``).
See ``docs/scenarios.md``.
"""

from fedstrata.scenarios.catalog import SCENARIOS, get_scenario
from fedstrata.scenarios.compare import ArmOutcome, Comparison, render_markdown
from fedstrata.scenarios.runner import arm_overrides, run_arm, run_scenario
from fedstrata.scenarios.scenario import Measure, Scenario

__all__ = [
    "SCENARIOS",
    "ArmOutcome",
    "Comparison",
    "Measure",
    "Scenario",
    "arm_overrides",
    "get_scenario",
    "render_markdown",
    "run_arm",
    "run_scenario",
]
