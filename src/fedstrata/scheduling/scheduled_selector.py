"""The coordinator's selector for scheduled rounds (:class:`ScheduledSelector`): it
skips devices predicted unable to meet the deadline, over-selects, and gives Oort
(Lai et al., OSDI 2021) the planner's predicted durations as hints."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fedstrata.scheduling.allocation import overselect
from fedstrata.scheduling.selection import OortSelector, Selector

if TYPE_CHECKING:
    from fedstrata.scheduling.planner import WorkPlanner

__all__ = ["ScheduledSelector"]

I64 = NDArray[np.int64]


class ScheduledSelector:
    """Coordinator selector: skip infeasible devices, over-select, hint Oort.

    Implements :class:`fedstrata.coordinator.Selector` over a
    :class:`fedstrata.scheduling.Selector`; the planner feeds the same selector back.

    Args:
        inner: uniform or Oort selection.
        planner: predicts feasibility and durations.
        batch_size: the clients' batch size (work per step).
        overselect_rate: invite ``ceil(k * (1 + rate))`` clients.
        skip_infeasible: never invite a device predicted to miss the deadline.
    """

    def __init__(
        self,
        inner: Selector,
        planner: WorkPlanner,
        batch_size: int,
        *,
        overselect_rate: float = 0.0,
        skip_infeasible: bool = True,
    ) -> None:
        overselect(1, overselect_rate)  # validates the rate
        self.inner, self.planner, self.batch_size = inner, planner, batch_size
        self.rate, self.skip_infeasible = overselect_rate, skip_infeasible

    def select(self, round_idx: int, available: I64, k: int, rng: np.random.Generator) -> I64:
        """Up to ``ceil(k * (1 + rate))`` feasible clients, sorted."""
        ids = np.sort(np.asarray(available, dtype=np.int64))
        if self.skip_infeasible:
            ids = self.planner.drop_infeasible(round_idx, ids, self.batch_size)
        if isinstance(self.inner, OortSelector):
            hint = self.planner.predicted_finish(
                ids, self.planner.settings.min_steps, self.batch_size
            )
            self.inner.hint_durations(ids, hint)
        want = overselect(k, self.rate) if k >= 1 else 0
        return self.inner.select(round_idx, ids, want, rng)
