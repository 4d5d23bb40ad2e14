"""The checkpoint tiers' save times as a round's record (issue 15 part 6).

:class:`SaveTracker` turns :attr:`Checkpointer.timings <fedstrata.checkpoint.Checkpointer.timings>`
into the tier fields of a :class:`~fedstrata.core.metrics.ResilienceStats`: each
tier's newest save completed since the previous round's record, so a save is recorded
once (a tier written every 10 rounds shows in one round's record of ten).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fedstrata.checkpoint.checkpointer import TierTimings
from fedstrata.core.metrics import ResilienceStats

__all__ = ["SaveTracker"]


class SaveTracker:
    """New saves per tier since the previous :meth:`new_saves` (see the module docstring).

    Args:
        timings: the checkpointer's per-tier figures (``lambda: ckpt.timings``).
    """

    def __init__(self, timings: Callable[[], Mapping[str, TierTimings]]) -> None:
        self._timings = timings
        self._seen: dict[str, int] = {}

    def new_saves(self) -> dict[str, float]:
        """Tier name -> duration of its newest save completed since the last call."""
        found: dict[str, float] = {}
        for name, t in self._timings().items():
            if t.saves > self._seen.get(name, 0) and t.save_s is not None:
                found[name] = t.save_s
            self._seen[name] = t.saves
        return found

    def record(
        self,
        *,
        critical_s: float | None = None,
        failovers: int | None = None,
        recovery_s: float | None = None,
        restore_s: float | None = None,
    ) -> ResilienceStats:
        """A round's record: the tiers' :meth:`new_saves` and the figures given."""
        saves = self.new_saves()
        return ResilienceStats(
            ckpt_memory_s=saves.get("memory"),
            ckpt_disk_s=saves.get("disk"),
            ckpt_object_s=saves.get("object"),
            ckpt_critical_s=critical_s,
            failovers=failovers,
            recovery_s=recovery_s,
            restore_s=restore_s,
        )
