"""Two arms' figures against the published one: the comparison and its report page.

Pure: no runs here (:mod:`fedstrata.scenarios.runner` makes the arms), so the logic
is tested on made-up arms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedstrata.scenarios.scenario import Scenario

__all__ = ["ArmOutcome", "Comparison", "render_markdown"]


@dataclass(frozen=True)
class ArmOutcome:
    """What one arm measured.

    Attributes:
        label: ``baseline`` or ``fedstrata``.
        figure: the scenario's figure, or None when the run does not show it.
        rounds: rounds run.
        final_accuracy: the last evaluated test accuracy, or None.
        sim_time_s: simulated seconds of the whole run.
        wall_s: wall seconds the run took here.
        run_dir: the arm's run directory (as text), or None.
        extras: the scenario's secondary figures for this arm.
    """

    label: str
    figure: float | None
    rounds: int
    final_accuracy: float | None
    sim_time_s: float
    wall_s: float
    run_dir: str | None = None
    extras: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """A scenario's baseline and fedstrata arms, beside the published figure."""

    scenario: Scenario
    baseline: ArmOutcome
    optimized: ArmOutcome
    quick: bool

    @property
    def ratio(self) -> float | None:
        """fedstrata's figure / the baseline's; None when either is missing or 0."""
        return _ratio(self.baseline.figure, self.optimized.figure)

    def extras(self) -> dict[str, dict[str, float | None]]:
        """Each secondary figure: baseline, fedstrata and their ratio."""
        out = {}
        for name in self.scenario.extras:
            base, opt = self.baseline.extras.get(name), self.optimized.extras.get(name)
            out[name] = {"baseline": base, "fedstrata": opt, "ratio": _ratio(base, opt)}
        return out

    @property
    def improved(self) -> bool | None:
        """Whether fedstrata's figure is better than the baseline's (None: unknown)."""
        ratio = self.ratio
        if ratio is None:
            return None
        return ratio > 1 if self.scenario.better == "higher" else ratio < 1

    def note(self) -> str | None:
        """Why a figure is missing, if one is."""
        missing = [a.label for a in (self.baseline, self.optimized) if a.figure is None]
        if not missing:
            return None
        return (
            f"{' and '.join(missing)}: the run does not show the figure "
            f"({self.scenario.figure}) within {self.optimized.rounds} round(s)"
            + (" (quick mode)" if self.quick else "")
        )

    def to_json(self) -> dict[str, Any]:
        """The benchmark's per-scenario object (JSON-ready)."""
        s = self.scenario
        return {
            "published": s.published,
            "published_before": s.published_before,
            "published_ratio": s.published_ratio,
            "measured": self.optimized.figure,
            "baseline": self.baseline.figure,
            "ratio": self.ratio,
            "improved": self.improved,
            "unit": s.unit,
            "figure": s.figure,
            "better": s.better,
            "baseline_name": s.baseline_name,
            "quick": self.quick,
            "rounds": self.optimized.rounds,
            "final_accuracy": {
                "baseline": self.baseline.final_accuracy,
                "fedstrata": self.optimized.final_accuracy,
            },
            "wall_s": self.baseline.wall_s + self.optimized.wall_s,
            "simulated": s.simulated,
            "real": s.real,
            "scaling": s.scaling,
            "note": self.note(),
            "extras": self.extras(),
        }


def _ratio(base: float | None, opt: float | None) -> float | None:
    if base is None or opt is None or base == 0:
        return None
    return opt / base


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}"


def render_markdown(c: Comparison) -> str:
    """The scenario's report: published figure beside the measured ones."""
    s = c.scenario
    rows = [
        ("published (their system)", _fmt(s.published_before), _fmt(s.published_after)),
        ("measured here", _fmt(c.baseline.figure), _fmt(c.optimized.figure)),
    ]
    lines = [
        f"# Scenario {s.name}" + (" (quick mode)" if c.quick else ""),
        "",
        f"Published case: {s.case}.",
        "",
        f"Figure: {s.figure} ({s.unit}; {s.better} is better).",
        "",
        "| | before / baseline | after / fedstrata | after / before |",
        "|---|---|---|---|",
        f"| {rows[0][0]} | {rows[0][1]} | {rows[0][2]} | {_fmt(s.published_ratio)} |",
        f"| {rows[1][0]} | {rows[1][1]} | {rows[1][2]} | {_fmt(c.ratio)} |",
        *(
            f"| {name} (secondary) | {_fmt(v['baseline'])} | {_fmt(v['fedstrata'])} "
            f"| {_fmt(v['ratio'])} |"
            for name, v in c.extras().items()
        ),
        "",
        f"- Baseline: {s.baseline_name}.",
        f"- Scaling: {s.scaling}.",
        f"- Simulated: {s.simulated}.",
        f"- Real: {s.real}.",
        f"- Rounds per arm: {c.optimized.rounds}; final test accuracy baseline "
        f"{_fmt(c.baseline.final_accuracy)}, fedstrata {_fmt(c.optimized.final_accuracy)}.",
    ]
    if c.note():
        lines.append(f"- Missing: {c.note()}.")
    return "\n".join(lines) + "\n"
