"""Replay a deployment's recorded allocations in the simulator (``scheduling.replay_url``).

A deployment's scheduler sizes each client's work from *measured* timings and real
devices stop at the deadline by themselves; the simulator sizes work from *simulated*
profiles and models devices stopping. Given the same decisions, the engine computes
the same model (the runtime and the simulator share it), but the decisions differ, so
a free-running simulation of a deployment's configuration is not its model.
:class:`ReplayPlanner` makes the comparison exact: instead of predicting, it replays
what the deployment's scheduler recorded in its device registry's ``round_history``
(one row per cohort member per round: steps assigned, steps completed, and whether
the work was completed, partial, dropped or failed):

* :meth:`~ReplayPlanner.admit`: a round's available clients are those the deployment
  settled (completed or partial work); clients it recorded as dropped (stragglers) or
  failed took no part in its aggregate and take none here;
* :meth:`~ReplayPlanner.plans`: each client runs the steps it completed in the
  deployment, and partial work weighs ``completed / assigned``
  (:meth:`~fedstrata.scheduling.planner.WorkPlanner.weight_factor`), the
  deployment's settlement.

Everything else (selection among the admitted, the simulated clock, learning,
statistics) is the simulator's own. Limits: a replayed round that recorded dropped or
failed clients leaves them out of the simulated cohort, where the deployment had them
in it and lost them; anything that depends on the cohort's size (distributed DP's
noise shares, secure aggregation's threshold) then differs for that round. A
simulated client that misses the simulated deadline is still late.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.training import LocalPlan
from fedstrata.errors import DataError
from fedstrata.scheduling import DeviceProfiles, Registry, TimePredictor
from fedstrata.scheduling.planner import ScheduleSettings, _RoundPlan
from fedstrata.scheduling.records import HistoryBatch, WorkStatus
from fedstrata.sim.profiles import ProfileTable
from fedstrata.sim.scheduled import ScheduledPlanner

__all__ = ["RecordedRound", "ReplayPlanner", "recorded_rounds", "replay_planner"]

I64 = NDArray[np.int64]


class RecordedRound:
    """One round of a deployment's record: per client, examples assigned and done and
    the status (:class:`~fedstrata.scheduling.records.WorkStatus`)."""

    def __init__(self, ids: I64, assigned: I64, completed: I64, status: NDArray[np.int8]) -> None:
        self.ids, self.assigned, self.completed, self.status = ids, assigned, completed, status

    def settled(self) -> I64:
        """Clients whose work the deployment folded (completed or partial)."""
        out: I64 = self.ids[self.status <= WorkStatus.PARTIAL]
        return out

    def row(self, client_id: int) -> int:
        where = np.flatnonzero(self.ids == client_id)
        if where.size == 0:
            raise DataError(f"replay: client {client_id} has no record")
        return int(where[-1])  # a re-run of the round records later rows last


def recorded_rounds(history: HistoryBatch) -> dict[int, RecordedRound]:
    """``round_history`` rows grouped by round."""
    out: dict[int, RecordedRound] = {}
    for r in np.unique(history.round_idx):
        m = history.round_idx == r
        out[int(r)] = RecordedRound(
            history.device_id[m], history.assigned_work[m], history.completed_work[m],
            history.status[m],
        )  # fmt: skip
    return out


class ReplayPlanner(ScheduledPlanner):
    """The simulator's planner replaying a deployment's record (module docstring).

    Args:
        record: the deployment's rounds (:func:`recorded_rounds`).
        (the rest): as :class:`~fedstrata.sim.scheduled.ScheduledPlanner`.
    """

    def __init__(
        self,
        record: dict[int, RecordedRound],
        settings: ScheduleSettings,
        predictor: TimePredictor,
        profiles: DeviceProfiles,
        devices: ProfileTable,
        *,
        client_sizes: NDArray[np.integer[Any]],
        flops_per_example: float,
        down_bytes: int,
        up_bytes: int,
    ) -> None:
        if not record:
            raise DataError("replay: the registry holds no round_history to replay")
        self.record = record
        super().__init__(
            settings, predictor, profiles, devices, client_sizes,
            flops_per_example=flops_per_example, down_bytes=down_bytes, up_bytes=up_bytes,
        )  # fmt: skip

    def _round_record(self, round_idx: int) -> RecordedRound:
        got = self.record.get(round_idx)
        if got is None:
            raise DataError(
                f"replay: round {round_idx} was not recorded (recorded rounds "
                f"{min(self.record)}..{max(self.record)})"
            )
        return got

    def admit(self, round_idx: int, available: I64) -> I64:
        """The available clients whose work the deployment settled in this round."""
        ids = np.sort(np.asarray(available, dtype=np.int64))
        out: I64 = ids[np.isin(ids, self._round_record(round_idx).settled())]
        return out

    def plans(self, round_idx: int, cohort: I64, default: LocalPlan) -> Sequence[LocalPlan]:
        """Each cohort member's recorded steps; weight factors ``completed / assigned``.

        Raises:
            DataError: a member without a record of this round, recorded as dropped or
                failed, or with work that is not whole steps.
        """
        rec, ids = self._round_record(round_idx), np.asarray(cohort, dtype=np.int64)
        per = self.per_step(ids, default.batch_size)
        rows = np.array([rec.row(int(c)) for c in ids], dtype=np.int64)
        if ids.size and (rec.status[rows] > WorkStatus.PARTIAL).any():
            raise DataError(f"replay: round {round_idx}: a client the deployment did not settle")
        assigned, done = rec.assigned[rows], rec.completed[rows]
        if ((assigned % per) != 0).any() or ((done % per) != 0).any():
            raise DataError(f"replay: round {round_idx}: recorded work is not whole steps")
        steps_a, steps_d = assigned // per, done // per
        predicted = self._predicted(ids, steps_a, per) if ids.size else np.zeros(0)
        self._set_round(_RoundPlan(ids, per, steps_a, steps_d.copy(), predicted, 0.0))
        return [replace(default, epochs=None, steps=int(s)) for s in steps_d]


def replay_planner(
    url: str,
    settings: ScheduleSettings,
    predictor: TimePredictor,
    profiles: DeviceProfiles,
    devices: ProfileTable,
    *,
    client_sizes: NDArray[np.integer[Any]],
    flops_per_example: float,
    nbytes: int,
) -> ReplayPlanner:
    """A :class:`ReplayPlanner` over the ``round_history`` of the registry at ``url``
    (read once, then closed).

    Raises:
        RegistryError: the registry cannot be opened or read.
        DataError: it holds no history.
    """
    with Registry.open(url) as registry:
        history = registry.history()
    return ReplayPlanner(
        recorded_rounds(history), settings, predictor, profiles, devices,
        client_sizes=client_sizes, flops_per_example=flops_per_example, down_bytes=nbytes,
        up_bytes=nbytes,
    )  # fmt: skip
