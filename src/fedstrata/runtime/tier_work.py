"""What an explicit tree's center and edges tell each other under ``scheduling`` (the
wire records of :mod:`fedstrata.runtime.tier_sched`; no policy, no SQLAlchemy).

* down, in an edge's task: :class:`TierWork`, the global round's cohort as the center
  drew it over the whole tree, with each member's allocated steps;
* up, in an edge's partial: one :class:`MemberReport` per cohort member the edge
  served, what happened to it in the edge's last edge round;
* up, in an edge's ``Hello`` and partials: its clients'
  :class:`~fedstrata.runtime.sched_reports.DeviceReport` (``TierProfile`` messages,
  converted in :mod:`fedstrata.runtime.tier_pbconv`).

A region tier relays all three between its parent and its edges. :class:`TreeRole` is
what a tier's center asks of the tree's scheduling (the center's ``TreeScheduler``,
or a region's relay); :class:`TierFollower` what an aggregator tier asks of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

from fedstrata.core.training import LocalPlan
from fedstrata.errors import DataError

if TYPE_CHECKING:
    from fedstrata.core.metrics import ScheduleStats
    from fedstrata.runtime.records import TaskSpec
    from fedstrata.runtime.sched_reports import DeviceReport, PartialWork

__all__ = ["MemberReport", "TierFollower", "TierWork", "TreeRole"]

Status = Literal["accepted", "late", "failed"]


@dataclass(frozen=True)
class TierWork:
    """The global round's cohort in draw order and each member's allocated steps
    (0: the task's own plan, e.g. an epochs plan when allocation is off).

    Raises:
        DataError: lengths differ, a negative step count, or a repeated member.
    """

    members: tuple[int, ...]
    steps: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.members) != len(self.steps):
            raise DataError(
                f"TierWork: {len(self.members)} members but {len(self.steps)} step counts"
            )
        if any(s < 0 for s in self.steps) or len(set(self.members)) != len(self.members):
            raise DataError(f"TierWork: negative steps or repeated members in {self}")

    @classmethod
    def of(cls, members: Sequence[int], plans: Sequence[LocalPlan]) -> TierWork:
        """The work of ``members`` under their ``plans`` (a plan without steps: 0)."""
        steps = tuple(p.steps or 0 for p in plans)
        return cls(tuple(int(c) for c in members), steps)

    def plan(self, client_id: int, default: LocalPlan) -> LocalPlan:
        """``client_id``'s plan: ``default`` with its allocated steps.

        Raises:
            DataError: ``client_id`` is not in the cohort.
        """
        try:
            steps = self.steps[self.members.index(client_id)]
        except ValueError:
            raise DataError(f"TierWork: client {client_id} is not in the cohort") from None
        return default if steps == 0 else replace(default, epochs=None, steps=steps)


@dataclass(frozen=True)
class MemberReport:
    """What happened to one cohort member at its edge (the edge's last edge round of
    the global round, as the simulator's planner keeps a client's last period).

    Attributes:
        client_id: the member.
        status: accepted, late (missed the deadline or dropped as a straggler), failed.
        examples: examples it trained (0: it sent no timings).
        download_s, compute_s: as the client measured them.
        upload_s: as the edge timed the upload.
        train_loss: its reported training loss (None: none).
        steps: the steps it completed (None: it did not say: its whole plan).
        timed: it sent its timings (False: nothing arrived; the times are 0).

    Raises:
        DataError: a negative or non-finite figure.
    """

    client_id: int
    status: Status
    examples: int = 0
    download_s: float = 0.0
    compute_s: float = 0.0
    upload_s: float = 0.0
    train_loss: float | None = None
    steps: int | None = None
    timed: bool = False

    def __post_init__(self) -> None:
        times = (self.download_s, self.compute_s, self.upload_s)
        ok = all(math.isfinite(t) and t >= 0 for t in times)
        if not ok or self.examples < 0 or (self.steps is not None and self.steps < 0):
            raise DataError(f"MemberReport must be finite and >= 0, got {self}")


class TreeRole(Protocol):
    """A tier's center's part in scheduling the tree (``Center.tree_sched``)."""

    @property
    def partial(self) -> PartialWork | None:
        """The partial-work terms its tasks carry."""
        ...

    def join(self, tier_id: int, profiles: Mapping[int, DeviceReport]) -> None:
        """A child tier forwarded its clients' profiles."""
        ...

    def start(self, round_idx: int, now_s: float, default: LocalPlan) -> TierWork:
        """The cohort and steps to send down in round ``round_idx``."""
        ...

    def reported(self, round_idx: int, reports: Sequence[MemberReport]) -> None:
        """A child tier's member reports of round ``round_idx``, with its partial
        (those of another round than the one in flight are ignored)."""
        ...

    def observe(self, round_idx: int, now_s: float) -> ScheduleStats | None:
        """The round closed."""
        ...


class TierFollower(Protocol):
    """What an aggregator tier of a scheduled tree forwards (``TierAggregator.follower``)."""

    profiles: dict[int, DeviceReport]

    def assign(self, task: TaskSpec) -> tuple[int, ...]:
        """Take the parent's decision from its task; the cohort."""
        ...

    def take_reports(self) -> tuple[MemberReport, ...]:
        """The members' reports for the partial (cleared)."""
        ...
