"""Partial work in deployment (issue 13 part 4): a client stops at the round deadline
and reports the steps it did; the center settles them as the simulator does; the
simulator replays the deployment's recorded allocations and computes its model."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import numpy as np
import pytest
from rthelpers import SMALL, tokens_for

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.core.context import RoundContext
from fedstrata.core.partial_work import StoppableTrainer
from fedstrata.core.training import LocalPlan, TrainResult
from fedstrata.errors import ConfigError, DataError
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, deployment
from fedstrata.runtime.pbconv import task_from_pb, task_to_pb, timings_from_pb, timings_to_pb
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.records import TaskKind, TaskSpec
from fedstrata.runtime.sched_reports import PartialWork, RoundTimings
from fedstrata.runtime.scheduling import DeviceReport
from fedstrata.runtime.settle import LocalTraining, StopRule
from fedstrata.scheduling import Registry, WorkStatus, settle_at_deadline, settlement_weights

SLOW = 2  # the client whose device is slow: it stops at the deadline


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class SlowTrainer:
    """A real trainer whose every local step takes ``step_s`` on a fake clock."""

    def __init__(self, inner, clock: FakeClock, step_s: float) -> None:
        self.inner, self.clock, self.step_s = inner, clock, step_s

    @property
    def spec(self):
        return self.inner.spec

    @property
    def flops_per_example(self):
        return self.inner.flops_per_example

    def initial_params(self, seed):
        return self.inner.initial_params(seed)

    def evaluate(self, params, data):
        return self.inner.evaluate(params, data)

    def train(self, params, data, plan, ctx, out):
        return self.inner.train(params, data, plan, ctx, out)

    def train_until(self, params, data, plan, ctx, out, *, stop):
        def ticking() -> bool:
            self.clock.t += self.step_s
            return stop()

        return self.inner.train_until(params, data, plan, ctx, out, stop=ticking)


class Unstoppable:
    """A user's own trainer without ``train_until``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.spec = inner.spec

    def train(self, params, data, plan, ctx, out):
        return self.inner.train(params, data, plan, ctx, out)


def _profile(dep, cid: int) -> DeviceReport:
    """A fast device: allocation gives it ``scheduling.max_steps``."""
    return DeviceReport(1e3, 4.0, 1.0, 1000.0, 1000.0, local_examples=len(dep.local_data(cid)))


def _config(tmp_path, deadline_s: float, *extra: str):
    return load_config(
        overrides=[
            *SMALL, "rounds.clients_per_round=null", "scheduling.allocation=true",
            "scheduling.max_steps=10", f"rounds.deadline_s={deadline_s}",
            f"scheduling.registry_url={tmp_path / 'devices.db'}", *extra,
        ]
    )  # fmt: skip


async def _federation(dep, slow: SlowTrainer):
    n = dep.num_clients
    tokens = tokens_for(n)
    center = dep.center()
    async with CenterServer(center, TokenTable(tokens)) as server:

        async def one(cid):
            async with GrpcLink(server.target, cid, tokens[cid]) as link:
                if cid != SLOW:
                    return await dep.client(link, cid, profile=_profile(dep, cid)).run()
                agent = dep.client(link, cid, slow, profile=_profile(dep, cid))  # type: ignore[arg-type]
                agent.now = agent.local.now = slow.clock
                return await agent.run()

        async with asyncio.TaskGroup() as tg:
            main = tg.create_task(center.run(dep.initial_params()))
            for cid in range(n):
                tg.create_task(one(cid))
    return main.result(), center


def _replay(cfg, tmp_path):
    """The simulator on the same configuration, replaying the deployment's record."""
    url = str(tmp_path / "devices.db")
    sim_cfg = cfg.model_copy(
        update={"scheduling": cfg.scheduling.model_copy(
            update={"registry_url": None, "replay_url": url}
        )}
    )  # fmt: skip
    return run(sim_cfg).simulation


def _history(tmp_path):
    with Registry.open(tmp_path / "devices.db") as reg:
        return reg.history()


@pytest.mark.parametrize(
    "secure", [[], ["secagg.enabled=true", "secagg.dropout_rate=0"]], ids=["plain", "secagg"]
)
def test_a_slow_client_stops_at_the_deadline_and_counts_by_the_fraction_done(tmp_path, secure):
    """Client 2 takes 10 s a step (fake clock) under a 60 s deadline: it stops after 5
    of its 10 steps (0.9 x 60 = 54 s); its update weighs 5/10, the simulator's
    settlement of those numbers, and the simulator replaying the deployment's record
    computes the same model bit for bit (under secure aggregation the client folds
    the factor in before masking) and the same example-weighted training loss."""
    cfg = _config(tmp_path, 60.0, *secure)
    dep = deployment(cfg)
    slow = SlowTrainer(dep.factory(), FakeClock(), 10.0)
    result, center = asyncio.run(_federation(dep, slow))
    history = _history(tmp_path)
    per = min(cfg.client.batch_size, len(dep.local_data(SLOW)))
    mine = history.device_id == SLOW
    assert (history.status[mine] == WorkStatus.PARTIAL).all()
    assert history.completed_work[mine].tolist() == [5 * per, 5 * per]
    assigned = history.assigned_work[mine] // per
    assert assigned[0] == 10  # then the predictor learnt it is slow: fewer steps
    assert 5 < assigned[1] < 10
    assert (history.status[~mine] == WorkStatus.COMPLETED).all()
    assert all(r.schedule is not None and r.schedule.partial == 1 for r in result.rounds)
    assert all(len(r.outcome.accepted) == dep.num_clients for r in result.rounds)
    assert center.scheduler is not None
    want = settlement_weights(*_sim_settle(int(assigned[1]), 1 / 10.0, 0.9 * 60.0))
    assert center.scheduler.planner().weight_factor(SLOW) == want[0] == 5 / assigned[1]
    sim = _replay(cfg, tmp_path)
    assert result.params.tobytes() == sim.params.tobytes()
    for got, expect in zip(result.rounds, sim.rounds, strict=True):
        assert got.train_loss == pytest.approx(expect.train_loss, rel=1e-12)
        assert expect.schedule is not None
        assert expect.schedule.partial == 1


def _sim_settle(assigned: int, steps_per_s: float, window_s: float):
    done, dropped = settle_at_deadline(np.array([assigned]), np.array([steps_per_s]), window_s)
    return np.array([assigned]), done, dropped


def test_too_little_work_is_dropped_as_the_simulators_straggler(tmp_path):
    """``scheduling.min_fraction`` 0.8: 7 of 10 steps by the deadline is too little;
    the client sends nothing, the round records it late (dropped), and the simulator
    replaying the record computes the deployment's model."""
    cfg = _config(tmp_path, 4.0, "scheduling.min_fraction=0.8", "rounds.rounds=1")
    dep = deployment(cfg)
    slow = SlowTrainer(dep.factory(), FakeClock(), 0.5)  # stops at 0.9 x 4 = 3.6 s: 7 steps
    result, _ = asyncio.run(_federation(dep, slow))
    (record,) = result.rounds
    assert SLOW in record.outcome.late
    assert SLOW not in record.outcome.accepted
    assert record.schedule is not None
    assert record.schedule.dropped == 1
    history = _history(tmp_path)
    assert history.status[history.device_id == SLOW].tolist() == [WorkStatus.DROPPED]
    sim = _replay(cfg, tmp_path)
    assert sim.rounds[0].clients_selected == dep.num_clients - 1  # it took no part
    assert sim.rounds[0].clients_completed == len(record.outcome.accepted)
    assert result.params.tobytes() == sim.params.tobytes()


def test_the_torch_trainer_stopped_after_k_steps_is_a_k_step_plan(small_deployment):
    """The contract that makes partial work the simulator's: the first k of n steps
    are exactly a k-step plan."""
    trainer = small_deployment.factory()
    assert isinstance(trainer, StoppableTrainer)
    params = small_deployment.initial_params()
    data = small_deployment.local_data(1)
    ctx = RoundContext(3, 7).for_client(1)
    plan = LocalPlan(batch_size=2, lr=0.1, epochs=None, steps=6, momentum=0.9)
    asked = iter(range(100))
    stopped, full = np.empty_like(params), np.empty_like(params)
    got = trainer.train_until(params, data, plan, ctx, stopped, stop=lambda: next(asked) >= 4)
    want = trainer.train(params, data, replace(plan, steps=4), ctx, full)
    assert got.num_steps == 4
    assert want.num_steps == 4
    assert stopped.tobytes() == full.tobytes()


def test_a_trainer_that_cannot_stop_says_so_once_and_does_full_work(small_deployment, caplog):
    inner = small_deployment.factory()
    local = LocalTraining(Unstoppable(inner), 4, now=lambda: 1e9)  # long past the deadline
    params = small_deployment.initial_params()
    plan = LocalPlan(batch_size=2, epochs=None, steps=3)
    ctx = RoundContext(0, 1).for_client(4)
    out = np.empty_like(params)
    terms = PartialWork(0.5)
    with caplog.at_level(logging.WARNING, logger="fedstrata.runtime.settle"):
        for _ in range(2):
            done = local.run(params, small_deployment.local_data(4), plan, ctx, out,
                             terms=terms, stop_at_s=0.0)  # fmt: skip
            assert (done.steps, done.dropped, done.factor) == (3, False, 1.0)
    warned = [r for r in caplog.records if "cannot stop at the round deadline" in r.message]
    assert len(warned) == 1
    assert "train_until" in warned[0].message


def test_a_loop_that_ignores_the_rounds_batches_counts_as_full_work(caplog):
    class Uncounted:
        spec = None

        def train_until(self, params, data, plan, ctx, out, *, stop):
            return TrainResult(10, 0)  # never asked stop, never counted

    local = LocalTraining(Uncounted(), 1, now=lambda: 0.0)  # type: ignore[arg-type]
    plan = LocalPlan(epochs=None, steps=4)
    done = local.run(None, [], plan, None, None, terms=PartialWork(0.9), stop_at_s=5.0)  # type: ignore[arg-type]
    assert (done.steps, done.dropped) == (4, False)
    assert "ctx.batches()" in caplog.text


@pytest.mark.parametrize(("steps", "assigned", "frac", "dropped"), [
    (0, 5, 0.0, True), (3, 5, 0.0, False), (3, 5, 0.7, True), (5, 5, 1.0, False),
])  # fmt: skip
def test_the_clients_settlement_is_the_simulators(steps, assigned, frac, dropped):
    """The client settles its steps with the rule the simulator applies to its modelled
    devices (``settle_at_deadline``: a device at 1 step/s with ``steps`` s left)."""

    class Counted:
        spec = None

        def train_until(self, params, data, plan, ctx, out, *, stop):
            ran = 0
            while ran < plan.steps and not stop():
                ran += 1
            return TrainResult(10, ran)

    clock = FakeClock()

    def now() -> float:
        clock.t += 1.0
        return clock.t - 1.0

    local = LocalTraining(Counted(), 1, now=now)  # type: ignore[arg-type]
    plan = LocalPlan(epochs=None, steps=assigned)
    done = local.run(None, [], plan, None, None, terms=PartialWork(frac), stop_at_s=steps)  # type: ignore[arg-type]
    sim_done, sim_dropped = settle_at_deadline(
        np.array([assigned]), np.array([1.0]), float(steps), min_fraction=frac
    )
    assert done.dropped == bool(sim_dropped[0]) == dropped
    if not dropped:
        assert done.steps == int(sim_done[0])
        assert done.factor == settlement_weights(np.array([assigned]), sim_done, sim_dropped)[0]


def test_partial_terms_and_steps_round_trip_on_the_wire():
    plan = LocalPlan(epochs=None, steps=4)
    task = TaskSpec(TaskKind.TRAIN, 3, 9, plan, 12.5, 10, "run", PartialWork(0.25, False))
    assert task_from_pb(task_to_pb(task)) == task
    assert task_from_pb(task_to_pb(replace(task, partial=None))).partial is None
    for steps in (None, 0, 7):
        header = pb.StreamHeader()
        header.timings.CopyFrom(timings_to_pb(RoundTimings(0.5, 1.5, 14, steps)))
        assert timings_from_pb(header, 0) == RoundTimings(0.5, 1.5, 14, steps)


def test_the_stop_rule_keeps_back_the_reserve_and_the_upload():
    assert StopRule().stop_at(100.0, 20.0, 1.5) == pytest.approx(100.0 + 18.0 - 1.5)
    with pytest.raises(ConfigError, match="reserve_fraction"):
        StopRule(1.0)
    with pytest.raises(DataError, match="min_fraction"):
        PartialWork(1.5)


def test_the_runtime_refuses_a_replay_and_the_replay_needs_a_record(tmp_path):
    cfg = load_config(overrides=[*SMALL, "scheduling.replay_url=sqlite://"])
    with pytest.raises(ConfigError, match="replay_url"):
        deployment(cfg)
    Registry.open(tmp_path / "empty.db").close()
    sim_cfg = load_config(
        overrides=[*SMALL, "scheduling.allocation=true", "rounds.deadline_s=10",
                   f"scheduling.replay_url={tmp_path / 'empty.db'}"]
    )  # fmt: skip
    with pytest.raises(DataError, match="no round_history"):
        run(sim_cfg)


def test_the_run_directory_records_the_rounds_schedule(tmp_path):
    """The center's run store holds the round's ScheduleStats (partial, dropped, ...),
    the simulator's fields."""
    from types import SimpleNamespace

    from fedstrata.coordinator.events import RoundOutcome
    from fedstrata.core.metrics import ScheduleStats
    from fedstrata.monitoring import RunStore
    from fedstrata.runtime.recorder import RunRecorder
    from fedstrata.runtime.records import RoundRecord

    config = load_config(overrides=["rounds.rounds=2", "evaluation.every=0"])
    dep = SimpleNamespace(config=config, trainer=None, test_data=None)
    stats = ScheduleStats(0.5, 0.2, 1.0, 3.0, 10.0, 3, 0.4, 1, 1, 20.0, 4.5)
    with RunStore.create(tmp_path / "run") as store:
        recorder = RunRecorder(dep, store, clock=iter(range(100)).__next__)  # type: ignore[arg-type]
        outcome = RoundOutcome(0, 3, (0, 1), (), (2,), 1.0, True)
        record = RoundRecord(outcome, 10, 20, 0.3, schedule=stats)
        metrics = recorder._metrics(0, record, np.zeros(3), 1.0, 1.0)
    assert metrics.schedule == stats


class _Underreports:
    """A client link that reports 1 step done whatever the client did."""

    def __init__(self, link) -> None:
        self.link = link

    def __getattr__(self, name):
        return getattr(self.link, name)

    async def submit(self, round_idx, payload, num_examples, metrics, timings=None):
        told = replace(timings, steps=1, examples=timings.examples // 10)
        return await self.link.submit(round_idx, payload, num_examples, metrics, told)


def test_the_center_refuses_a_plaintext_update_reporting_too_little_work(tmp_path):
    """The center settles what a client reports itself: an update claiming 1 of 10 steps
    under ``min_fraction`` 0.5 is refused as a straggler and recorded dropped."""
    cfg = _config(tmp_path, 60.0, "scheduling.min_fraction=0.5", "rounds.rounds=1")
    dep = deployment(cfg)
    n, liar = dep.num_clients, 4
    tokens = tokens_for(n)

    async def main():
        center = dep.center()
        async with CenterServer(center, TokenTable(tokens)) as server:

            async def one(cid):
                async with GrpcLink(server.target, cid, tokens[cid]) as link:
                    used = _Underreports(link) if cid == liar else link
                    return await dep.client(used, cid, profile=_profile(dep, cid)).run()  # type: ignore[arg-type]

            async with asyncio.TaskGroup() as tg:
                main = tg.create_task(center.run(dep.initial_params()))
                for cid in range(n):
                    tg.create_task(one(cid))
        return main.result()

    result = asyncio.run(main())
    (record,) = result.rounds
    assert liar in [cid for cid, _ in record.outcome.failed]
    assert any(c == liar and "straggler" in why for _, c, why in result.rejections)
    assert record.schedule is not None
    assert record.schedule.dropped == 1
    history = _history(tmp_path)
    assert history.status[history.device_id == liar].tolist() == [WorkStatus.DROPPED]
