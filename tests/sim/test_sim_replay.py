"""The simulator's deadline model and its replay of a deployment's record."""

from __future__ import annotations

import numpy as np
import pytest

from fedstrata.core import LocalPlan
from fedstrata.errors import DataError
from fedstrata.scheduling import HistoryBatch, TimePredictor, WorkStatus
from fedstrata.sim import ProfileDistribution, ProfileTable
from fedstrata.sim.replay import ReplayPlanner, recorded_rounds
from fedstrata.sim.scheduled import ScheduleSettings, TrueDeviceCut, registry_profiles

N = 6
DIST = ProfileDistribution(flops_max=1e7, compute_spread=1000.0, latency_ms=1.0)


def _table() -> ProfileTable:
    return ProfileTable.generate(N, DIST, np.random.default_rng(0))


def test_a_fast_device_never_runs_more_than_its_assignment():
    """The cut of a device that could do far more by the deadline is its assignment
    (a regression: an uncapped cut trained it for millions of steps)."""
    settings = ScheduleSettings(deadline_s=1e6, allocation=True)
    cut = TrueDeviceCut(settings, _table(), 1.0, 16, 16)
    ids = np.arange(N, dtype=np.int64)
    assigned = np.full(N, 3, dtype=np.int64)
    assert cut(ids, assigned, np.ones(N, dtype=np.int64)).tolist() == [3] * N


def _replay(history: HistoryBatch) -> ReplayPlanner:
    devices = _table()
    profiles = registry_profiles(devices)
    return ReplayPlanner(
        recorded_rounds(history), ScheduleSettings(deadline_s=10.0), TimePredictor.from_profiles(
            profiles, 1.0), profiles, devices, client_sizes=np.full(N, 20),
        flops_per_example=1.0, down_bytes=16, up_bytes=16,
    )  # fmt: skip


def _history() -> HistoryBatch:
    """Round 0: clients 0-3 completed 4 steps of 4, 4 did 2 of 4, 5 was dropped."""
    ok, part, drop = WorkStatus.COMPLETED, WorkStatus.PARTIAL, WorkStatus.DROPPED
    return HistoryBatch(
        np.arange(N), np.zeros(N, dtype=np.int64), np.full(N, 8), np.array([8, 8, 8, 8, 4, 0]),
        np.full(N, np.nan), np.full(N, np.nan), np.array([ok, ok, ok, ok, part, drop]),
    )  # fmt: skip


def test_the_replay_runs_the_recorded_steps_and_weighs_the_recorded_fraction():
    planner = _replay(_history())
    ids = planner.admit(0, np.arange(N, dtype=np.int64))
    assert ids.tolist() == [0, 1, 2, 3, 4]  # the dropped client took no part
    plans = planner.plans(0, ids, LocalPlan(batch_size=2, epochs=None, steps=9))
    assert [p.steps for p in plans] == [4, 4, 4, 4, 2]
    assert [planner.weight_factor(int(c)) for c in ids] == [1.0, 1.0, 1.0, 1.0, 0.5]


def test_the_replay_refuses_what_was_not_recorded():
    planner = _replay(_history())
    plan = LocalPlan(batch_size=2, epochs=None, steps=9)
    with pytest.raises(DataError, match="round 1 was not recorded"):
        planner.plans(1, np.arange(2, dtype=np.int64), plan)
    with pytest.raises(DataError, match="did not settle"):
        planner.plans(0, np.array([5], dtype=np.int64), plan)
    with pytest.raises(DataError, match="whole steps"):
        planner.plans(
            0, np.array([0], dtype=np.int64), LocalPlan(batch_size=3, epochs=None, steps=1)
        )
