"""The steps of one synchronous round at a :class:`~fedstrata.runtime.center.Center`.

:meth:`Center.collect <fedstrata.runtime.center.Center.collect>` opens a round (the
coordinator's cohort, a :class:`~fedstrata.runtime.intake.RoundIntake`) and then runs
these steps, each over explicit state: :func:`dispatch` queues each cohort member's
``TRAIN`` task on its session (its plan sized by the scheduler, the partial-work terms
of a scheduled round or tree) and fails those no longer connected;
:func:`await_cohort` waits until every member is resolved or the deadline (plus a
tree's grace for partials) passes; :func:`close_round` closes the intake into the
round's record with the scheduler's observations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from fedstrata.core.clock import Clock
from fedstrata.core.training import LocalPlan
from fedstrata.runtime.intake import RoundIntake
from fedstrata.runtime.records import (
    CenterSettings,
    OpenRound,
    RoundRecord,
    TaskKind,
    TaskSpec,
)

if TYPE_CHECKING:
    from fedstrata.runtime.scheduling import CenterScheduler
    from fedstrata.runtime.tier_sched import EdgeFollower
    from fedstrata.runtime.tier_work import TierWork, TreeRole

__all__ = ["await_cohort", "close_round", "dispatch"]

log = logging.getLogger(__name__)


def dispatch(
    intake: RoundIntake,
    sessions: Mapping[int, asyncio.Queue[TaskSpec]],
    settings: CenterSettings,
    *,
    scheduler: CenterScheduler | EdgeFollower | None,
    tree_sched: TreeRole | None,
    relayed: TaskSpec | None = None,
    work: TierWork | None = None,
) -> None:
    """Queue the open round's ``TRAIN`` task on each cohort member's session.

    The plan and seed are the settings' unless a parent ``relayed`` its task; under
    ``scheduler`` each member's plan is sized to the deadline and the round carries
    its partial-work terms (a tree's ``tree_sched`` terms override them); ``work``
    is a scheduled tree's share for an edge. A member without a session fails.
    """
    s, rnd = settings, intake.rnd
    plan = s.plan if relayed is None else relayed.plan
    seed = s.root_seed if relayed is None else relayed.root_seed
    deadline, partial = s.round_timeout_s, None
    plans: Sequence[LocalPlan | None] = [plan] * len(rnd.cohort)
    if scheduler is not None and plan is not None:
        plans = scheduler.plans(rnd.round_idx, rnd.cohort, plan)
        partial = scheduler.partial  # stop at the deadline, settle (settle.py)
    if tree_sched is not None:  # the edges' terms (tier_sched.py)
        partial = tree_sched.partial
    for cid, own in zip(rnd.cohort, plans, strict=True):
        queue = sessions.get(cid)
        if queue is None:
            intake.fail(cid, "disconnected before the round started")
        else:
            queue.put_nowait(TaskSpec(
                TaskKind.TRAIN, rnd.round_idx, seed, own, deadline, rnd.model.nbytes,
                rnd.run_id, partial, work,
            ))  # fmt: skip
    intake.check_done()


async def await_cohort(rnd: OpenRound, round_timeout_s: float | None, grace_s: float) -> None:
    """Wait until every member of ``rnd`` is resolved, at most ``round_timeout_s`` +
    ``grace_s`` (None: no deadline); a passed deadline is logged with who is missing."""
    try:
        limit = round_timeout_s
        grace = None if limit is None else limit + grace_s
        async with asyncio.timeout(grace):
            await rnd.done.wait()
    except TimeoutError:
        missing = sorted(rnd.members - rnd.resolved.keys())
        log.warning("round %d: deadline passed; missing clients %s", rnd.round_idx, missing)


def close_round(
    intake: RoundIntake,
    clock: Clock,
    scheduler: CenterScheduler | EdgeFollower | None,
    tree_sched: TreeRole | None,
) -> RoundRecord:
    """Close ``intake`` into the round's record, with the schedule statistics of
    ``scheduler`` or a tree's ``tree_sched`` (which observe the closed round)."""
    record = intake.close(clock.now())
    if scheduler is not None:
        stats = scheduler.observe(intake.rnd.round_idx, record.outcome, clock.now())
        record = dataclasses.replace(record, schedule=stats)
    if tree_sched is not None:
        stats = tree_sched.observe(intake.rnd.round_idx, clock.now())
        record = dataclasses.replace(record, schedule=stats)
    return record
