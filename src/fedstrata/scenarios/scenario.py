"""One published case as data: its figure, its two arms and what is real in them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from fedstrata.config import FedConfig
from fedstrata.errors import ConfigError
from fedstrata.monitoring.events import RoundMetrics

__all__ = ["Measure", "Scenario"]

Measure = Callable[[FedConfig, Sequence[RoundMetrics]], "float | None"]


@dataclass(frozen=True)
class Scenario:
    """A published case, reproduced by one preset run twice: a baseline and fedstrata.

    Both arms start from the preset named ``name``; ``baseline`` and ``optimized``
    are ``key=value`` overrides on it (``{arm_dir}`` in a value becomes the arm's
    own directory, e.g. for a fresh device registry). ``quick`` overrides shrink
    both arms alike for CI and ``--quick``.

    Attributes:
        name: the preset (and the scenario's) name.
        case: the published case, in words.
        figure: what the compared figure measures.
        unit: its unit.
        better: whether a higher or lower figure is better.
        published_before: the published figure before (their baseline), if given.
        published_after: the published figure with the optimized system, if given.
        published_relative: the published after / before when the case gives only a
            relative figure ("31% fewer rounds": 0.69), in no unit of its own.
        baseline_name: the baseline arm in words (what users would otherwise run).
        baseline: overrides of the baseline arm.
        optimized: overrides of fedstrata's arm.
        quick: overrides of both arms in quick mode.
        measure: reads the figure from a run's config and rounds.
        scaling: how the published size maps to what runs on one machine.
        simulated: what is simulated.
        real: what runs for real.
        extras: secondary figures (name with unit -> how to read it), reported for
            both arms beside the main one, e.g. throughput beside utilization.
    """

    name: str
    case: str
    figure: str
    unit: str
    better: Literal["higher", "lower"]
    published_before: float | None
    published_after: float | None
    published_relative: float | None
    baseline_name: str
    baseline: tuple[str, ...]
    optimized: tuple[str, ...]
    quick: tuple[str, ...]
    measure: Measure
    scaling: str
    simulated: str
    real: str
    extras: Mapping[str, Measure] = field(default_factory=dict)

    def __post_init__(self) -> None:
        given = (self.published_before, self.published_after, self.published_relative)
        if all(v is None for v in given):
            raise ConfigError(f"scenario {self.name!r}: give a published figure")
        for text in (*self.baseline, *self.optimized, *self.quick):
            if "=" not in text:
                raise ConfigError(f"scenario {self.name!r}: override {text!r} lacks '='")

    @property
    def published(self) -> float | None:
        """The published figure in ``unit``: the after figure, else the before; None
        when the case published only a relative figure."""
        return self.published_after if self.published_after is not None else self.published_before

    @property
    def published_ratio(self) -> float | None:
        """after / before as published (or the relative figure); None with one figure."""
        before, after = self.published_before, self.published_after
        if before is not None and after is not None and before != 0:
            return after / before
        return self.published_relative
