"""The simulator's checkpoint times in its rounds' records (issue 15 part 6).

:class:`CheckpointStatsHook` is a round hook (:class:`~fedstrata.coordinator.hooks.RoundHook`)
that changes nothing in the round and returns a
:class:`~fedstrata.core.metrics.ResilienceStats`: the save time of each tier's newest
save completed since the previous round (the tiers write in the background) and the
critical-path time of the newest snapshot. A round's own snapshot is taken after its
record, so a round reports the checkpoints of the rounds before it. It keeps no state
a checkpoint must hold (its ``state_dict`` is empty).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedstrata.api.checkpoints import RoundCheckpoints
from fedstrata.checkpoint.checkpointer import TierTimings
from fedstrata.checkpoint.stats import SaveTracker
from fedstrata.coordinator.hooks import RoundHook
from fedstrata.core.context import RoundContext
from fedstrata.core.metrics import ResilienceStats
from fedstrata.core.params import FloatVector
from fedstrata.core.statepart import StatePart

__all__ = ["CheckpointStatsHook", "with_checkpoint_stats"]


class CheckpointStatsHook:
    """Reports ``ckpt``'s save times in every round's ``resilience`` record."""

    applies_every_round = False

    def __init__(self, ckpt: RoundCheckpoints) -> None:
        self.ckpt = ckpt
        self.tracker = SaveTracker(self._timings)

    def _timings(self) -> Mapping[str, TierTimings]:
        timings: Mapping[str, TierTimings] = getattr(self.ckpt.sink, "timings", {})
        return timings

    def start(self, round_idx: int) -> None:
        pass

    def aggregate(self, mean: FloatVector, accepted: int, ctx: RoundContext) -> FloatVector:
        return mean

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> ResilienceStats | None:
        """The record (None before any checkpoint was taken: nothing to report)."""
        if not self.ckpt.critical_s:
            return None
        return self.tracker.record(critical_s=self.ckpt.critical_s[-1])

    def state_dict(self) -> StatePart:
        return StatePart()

    def load_state_dict(self, part: StatePart) -> None:
        pass


def with_checkpoint_stats(
    hooks: Sequence[RoundHook], ckpt: RoundCheckpoints | None
) -> tuple[RoundHook, ...]:
    """``hooks`` and, with checkpoints, a :class:`CheckpointStatsHook` last."""
    return tuple(hooks) if ckpt is None else (*hooks, CheckpointStatsHook(ckpt))
