"""The end of a run: how it ended (:class:`RunStatus`), the :class:`RunFinished` event a
summary reports, and the :class:`RunTotals` a driver or the run store keeps over a run's
rounds to build it. Re-exported by :mod:`fedstrata.monitoring.events`.

Events validate at construction and raise :class:`~fedstrata.errors.DataError` naming
the field, the value and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from fedstrata.core.metrics import StatsRecord
from fedstrata.monitoring._checks import (
    check_accuracy,
    check_int,
    check_loss,
    check_seconds,
    fail,
    set_field,
)

if TYPE_CHECKING:
    from fedstrata.monitoring.events import RoundMetrics
    from fedstrata.monitoring.fedeval import FedEvalMetrics

__all__ = ["RunFinished", "RunStatus", "RunTotals"]


class RunStatus(StrEnum):
    """How a run ended."""

    COMPLETED = "completed"
    """All configured rounds ran."""
    STOPPED = "stopped"
    """A rule ended it early (privacy budget spent, target accuracy reached)."""
    FAILED = "failed"
    """An error ended it."""
    INTERRUPTED = "interrupted"
    """It was cancelled, or its store closed without a RunFinished event."""


@dataclass(frozen=True)
class RunFinished:
    """A run ended; the figures a summary reports.

    Attributes:
        run_id: the run's name.
        status: how it ended.
        rounds_completed: rounds whose metrics were emitted.
        final_accuracy: the last accuracy measured, or None if never evaluated.
        best_accuracy: the best accuracy measured, or None.
        final_loss: the last test loss measured, or None.
        sim_time_s: simulated time of the whole run.
        wall_time_s: wall time the run took (a resumed run: summed over its
            segments, each counted up to the checkpoint the next one resumed from).
        bytes_up: total bytes sent by clients.
        bytes_down: total bytes sent to clients.
        stop_reason: why it stopped, when ``status`` is not COMPLETED.
        segment_wall_time_s: a resumed run's last segment (this process) alone; None
            for a run that ran in one go.
    """

    run_id: str
    status: RunStatus
    rounds_completed: int
    final_accuracy: float | None
    best_accuracy: float | None
    final_loss: float | None
    sim_time_s: float
    wall_time_s: float
    bytes_up: int
    bytes_down: int
    stop_reason: str = ""
    segment_wall_time_s: float | None = None

    def __post_init__(self) -> None:
        """Validate and normalise the fields.

        Raises:
            DataError: a field breaks its rule; the message names field, value and rule.
        """
        ev = f"RunFinished({self.run_id!r})"
        if not isinstance(self.run_id, str) or not self.run_id:
            raise fail(ev, "run_id", self.run_id, "must be a non-empty str")
        try:
            set_field(self, "status", RunStatus(self.status))
        except ValueError:
            raise fail(ev, "status", self.status, f"must be one of {list(RunStatus)}") from None
        for name in ("rounds_completed", "bytes_up", "bytes_down"):  # totals: no int64 cap
            check_int(ev, name, getattr(self, name), high=None)
        for name in ("final_accuracy", "best_accuracy"):
            set_field(self, name, check_accuracy(ev, name, getattr(self, name)))
        set_field(self, "final_loss", check_loss(ev, "final_loss", self.final_loss))
        for name in ("sim_time_s", "wall_time_s"):
            set_field(self, name, check_seconds(ev, name, getattr(self, name)))
        if self.segment_wall_time_s is not None:
            segment = check_seconds(ev, "segment_wall_time_s", self.segment_wall_time_s)
            set_field(self, "segment_wall_time_s", segment)
        if not isinstance(self.stop_reason, str):
            raise fail(ev, "stop_reason", self.stop_reason, "must be a str")


@dataclass
class RunTotals:
    """Running totals over a run's rounds; turns into a :class:`RunFinished`.

    The simulator keeps one, ``add``s each round's metrics and calls ``finish`` at the
    end; the run store keeps its own to summarise runs that end without RunFinished.
    """

    rounds: int = 0
    final_accuracy: float | None = None
    best_accuracy: float | None = None
    final_loss: float | None = None
    sim_time_s: float = 0.0
    wall_time_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    clients_selected: int = 0
    clients_completed: int = 0
    clients_failed: int = 0
    clients_late: int = 0
    skipped_steps: int = 0
    final_extras: dict[str, float] = field(default_factory=dict)
    final_stats: dict[str, StatsRecord] = field(default_factory=dict)
    final_fed_eval: dict[str, float] = field(default_factory=dict)

    def add_fed_eval(self, event: FedEvalMetrics) -> None:
        """Keep the last federated evaluation's means and worst 10% (and its round)."""
        self.final_fed_eval = {"round": float(event.round_idx), **event.headline()}

    def add(self, metrics: RoundMetrics) -> None:
        """Fold one round's metrics into the totals."""
        self.rounds += 1
        if metrics.accuracy is not None:
            self.final_accuracy = metrics.accuracy
            best = self.best_accuracy
            self.best_accuracy = metrics.accuracy if best is None else max(best, metrics.accuracy)
        if metrics.loss is not None:
            self.final_loss = metrics.loss
        self.sim_time_s = max(self.sim_time_s, metrics.sim_time_s)
        self.wall_time_s += metrics.wall_round_s
        self.bytes_up += metrics.bytes_up
        self.bytes_down += metrics.bytes_down
        self.clients_selected += metrics.clients_selected
        self.clients_completed += metrics.clients_completed
        self.clients_failed += metrics.clients_failed
        self.clients_late += metrics.clients_late
        if metrics.precision is not None:
            self.skipped_steps += metrics.precision.skipped_steps
        self.final_extras.update(metrics.extras)
        self.final_stats.update((r.FAMILY, r) for r in metrics.stats())

    def finish(
        self,
        run_id: str,
        status: RunStatus,
        wall_time_s: float | None = None,
        stop_reason: str = "",
        segment_wall_time_s: float | None = None,
    ) -> RunFinished:
        """The RunFinished event for these totals.

        Args:
            run_id: the run's name.
            status: how it ended.
            wall_time_s: measured wall time; defaults to the sum of the rounds' wall times.
            stop_reason: why it stopped early.
            segment_wall_time_s: a resumed run's own segment (None: ran in one go).

        Raises:
            DataError: an argument breaks RunFinished's rules.
        """
        return RunFinished(
            run_id=run_id,
            status=status,
            rounds_completed=self.rounds,
            final_accuracy=self.final_accuracy,
            best_accuracy=self.best_accuracy,
            final_loss=self.final_loss,
            sim_time_s=self.sim_time_s,
            wall_time_s=self.wall_time_s if wall_time_s is None else wall_time_s,
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            stop_reason=stop_reason,
            segment_wall_time_s=segment_wall_time_s,
        )
