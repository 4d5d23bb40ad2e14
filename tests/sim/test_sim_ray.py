"""RayExecutor: persistent Ray actors, results in task order, bit-identical runs.

One local Ray instance (2 CPUs, no dashboard, private temp dir) serves the whole
module. Never ``ray stop`` here: it would kill every Ray process on the machine.
"""

import logging
import os
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from simfakes import FakeData, FakeFactory, FakeTrainer

from fedstrata.algorithms import FedAvg
from fedstrata.compress import PRESETS, ChainCodec
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core import LocalPlan
from fedstrata.errors import ConfigError, TransportError
from fedstrata.pipeline import DenseCodec, Pipeline
from fedstrata.sim import (
    ClientJob,
    ClientTask,
    InProcessExecutor,
    ProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
    Simulation,
    ray_executor,
)
from fedstrata.sim.ray_executor import RayExecutor, open_ray_executor, ray_available

needs_ray = pytest.mark.skipif(
    not ray_available(), reason="Ray is not installed (pip install 'fedstrata[ray]')"
)


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """One private local Ray instance for the module; shut down (never `ray stop`)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fedstrata[ray]')")
    # The fakes live in tests/sim/simfakes.py, which Ray workers cannot import: ship by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[FakeTrainer.__module__])
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        ray.init(
            address="local",
            include_dashboard=False,
            num_cpus=2,
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
            configure_logging=False,
            log_to_driver=False,
        )
        try:
            yield ray
        finally:
            ray.shutdown()


@dataclass(frozen=True)
class PidFactory:
    """Trainers that report which process trained and how many clients it trained."""

    def __call__(self) -> "PidTrainer":
        return PidTrainer()


class PidTrainer(FakeTrainer):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def train(self, params, data, plan, ctx, out):
        self.calls += 1
        res = super().train(params, data, plan, ctx, out)
        res.metrics.update(pid=float(os.getpid()), calls=float(self.calls))
        return res


@dataclass(frozen=True)
class ExitFactory:
    """Trainers whose process dies (os._exit) while training client ``die_on``."""

    die_on: int

    def __call__(self) -> "ExitTrainer":
        return ExitTrainer(self.die_on)


class ExitTrainer(FakeTrainer):
    def __init__(self, die_on: int) -> None:
        super().__init__()
        self.die_on = die_on

    def train(self, params, data, plan, ctx, out):
        if ctx.client_id == self.die_on and ctx.round_idx == 0:
            os._exit(1)
        return super().train(params, data, plan, ctx, out)


def make_job(factory=None, pipeline=None, data=None):
    return ClientJob(factory or FakeFactory(), data or FakeData(), 5, pipeline)


def tasks_for(n, round_idx=0, num_clients=12):
    return [ClientTask(i, i % num_clients, round_idx, LocalPlan(lr=0.5)) for i in range(n)]


def simulate(executor, pipeline=None, rounds=3, per_round=7):
    data = FakeData()
    sim = Simulation(
        settings=SimSettings(rounds, LocalPlan(lr=0.5), root_seed=5),
        coordinator=RoundCoordinator(RoundPolicy(per_round, 1, None, 5)),
        trainer=FakeFactory()(),
        executor=executor,
        client_sizes=data.client_sizes(),
        test_data=data.client(0),
        profiles=ProfileTable.generate(
            data.num_clients, ProfileDistribution(), np.random.default_rng(0)
        ),
        server_optimizer=FedAvg(),
        pipeline=pipeline,
    )
    try:
        return sim.run(FakeFactory()().initial_params(1))
    finally:
        executor.close()


@needs_ray
@pytest.mark.parametrize(
    "make_pipeline",
    [
        lambda: None,
        lambda: Pipeline([], DenseCodec(4)),
        lambda: Pipeline([], ChainCodec(PRESETS["int4_sr"], 4)),
    ],
    ids=["dense", "dense-payload", "int4-payload"],
)
def test_ray_run_is_bit_identical_to_in_process(ray_session, make_pipeline):
    ref = simulate(InProcessExecutor(make_job(pipeline=make_pipeline()), 4), make_pipeline())
    got = simulate(RayExecutor(make_job(pipeline=make_pipeline()), 4), make_pipeline())
    assert ref.params.tobytes() == got.params.tobytes()
    assert [m.accuracy for m in ref.rounds] == [m.accuracy for m in got.rounds]
    assert [m.clients_completed for m in got.rounds] == [7, 7, 7]


@needs_ray
def test_results_come_in_task_order_with_client_errors_kept(ray_session):
    job = make_job(FakeFactory(raise_clients=(3,)))
    ref_ex = InProcessExecutor(make_job(FakeFactory(raise_clients=(3,))), 4)
    params = np.arange(4, dtype=np.float32)
    tasks = tasks_for(100)  # chunks of several clients, more tasks than the window
    with RayExecutor(job, 4, num_actors=2) as ex:
        got = [(r.index, r.client_id, r.error, None if r.vector is None else r.vector.tobytes())
               for r in ex.run(params, tasks)]  # fmt: skip
    want = [(r.index, r.client_id, r.error, None if r.vector is None else r.vector.tobytes())
            for r in ref_ex.run(params, tasks)]  # fmt: skip
    assert got == want
    assert [g[0] for g in got] == list(range(100))
    assert sum(g[2] is not None for g in got) == sum(t.client_id == 3 for t in tasks)
    assert ray_session.is_initialized()  # the caller's Ray connection is left open


@needs_ray
def test_actors_persist_across_rounds_and_share_the_work(ray_session):
    with RayExecutor(make_job(PidFactory()), 4, num_actors=2) as ex:
        params = np.zeros(4, np.float32)
        first = list(ex.run(params, tasks_for(24)))
        second = list(ex.run(params + 1, tasks_for(24, round_idx=1)))
    pids = {r.metrics["pid"] for r in first + second}
    assert len(pids) == 2
    assert os.getpid() not in pids
    for pid in pids:  # each actor's trainer keeps counting: built once, not per round
        calls = [r.metrics["calls"] for r in first + second if r.metrics["pid"] == pid]
        assert sorted(calls) == list(range(1, len(calls) + 1))


@needs_ray
def test_new_params_reach_every_actor_each_round(ray_session):
    job = make_job()
    ref = InProcessExecutor(make_job(), 4)
    with RayExecutor(job, 4, num_actors=2) as ex:
        for r in range(3):
            params = np.full(4, r, np.float32)
            got = [x.vector.tobytes() for x in ex.run(params, tasks_for(12, r))]
            assert got == [x.vector.tobytes() for x in ref.run(params, tasks_for(12, r))]


@needs_ray
def test_dead_actor_fails_its_clients_and_is_replaced(ray_session, caplog):
    caplog.set_level(logging.WARNING, logger="fedstrata.sim.ray_executor")
    with RayExecutor(make_job(ExitFactory(die_on=5)), 4, num_actors=2) as ex:
        params = np.zeros(4, np.float32)
        first = list(ex.run(params, tasks_for(12)))
        second = list(ex.run(params, tasks_for(12, round_idx=1)))
    assert [r.index for r in first] == list(range(12))
    assert first[5].error == "Ray actor died"
    assert sum(r.error is None for r in first) >= 6
    assert all(r.error is None for r in second)
    assert "Ray actor died; failing its" in caplog.text
    assert "restarting Ray actor" in caplog.text


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="num_actors must be >= 1, got 0"):
        RayExecutor(make_job(), 4, num_actors=0)
    with pytest.raises(ConfigError, match="size must be >= 1, got 0"):
        RayExecutor(make_job(), 0)
    with pytest.raises(ConfigError, match="fallback_workers must be >= 0, got -1"):
        open_ray_executor(make_job(), 4, fallback_workers=-1)


@pytest.mark.parametrize(("workers", "kind"), [(0, InProcessExecutor), (1, ProcessExecutor)])
def test_falls_back_to_local_processes_with_a_warning(monkeypatch, caplog, workers, kind):
    def no_ray():
        raise TransportError("the Ray backend needs the 'ray' package")

    monkeypatch.setattr(ray_executor, "_import_ray", no_ray)
    caplog.set_level(logging.WARNING, logger="fedstrata.sim.ray_executor")
    ex = open_ray_executor(make_job(), 4, fallback_workers=workers)
    try:
        assert isinstance(ex, kind)
        results = list(ex.run(np.zeros(4, np.float32), tasks_for(5)))
        assert [r.index for r in results] == list(range(5))
    finally:
        ex.close()
    assert "Ray backend unavailable" in caplog.text


@needs_ray
def test_open_ray_executor_uses_ray_when_it_can(ray_session):
    ex = open_ray_executor(make_job(), 4, num_actors=1)
    try:
        assert isinstance(ex, RayExecutor)
        assert ex.num_actors == 1
    finally:
        ex.close()


@needs_ray
def test_ray_executor_describes_its_actors(ray_session):
    """Issue 11 defect 24: the run summary names Ray actors, not "worker processes 1"."""
    with RayExecutor(make_job(), 4, num_actors=2) as ex:
        assert ex.description == "2 Ray actors"
    with ProcessExecutor(make_job(), 4, workers=1) as local:
        assert local.description == "1 worker process + this one"
    assert InProcessExecutor(make_job(), 4).description == "in-process"
