"""Issue 14 part 8: worker processes start with fork or spawn and divide the cores.

Spawned workers are fresh interpreters: they unpickle the job (this module's trainer
included, found on the parent's ``sys.path``) and attach to the named shared block.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from simfakes import FakeData, FakeTrainer

from fedstrata.api import run
from fedstrata.api.components import worker_threads
from fedstrata.config import load_config
from fedstrata.config.models import SimConfig
from fedstrata.core import TrainResult
from fedstrata.core.training import LocalPlan
from fedstrata.errors import ConfigError
from fedstrata.sim import (
    ClientJob,
    ClientTask,
    InProcessExecutor,
    ProcessExecutor,
    WorkerThreads,
    auto_threads,
    resolve_start_method,
    threads_per_process,
)
from fedstrata.sim._workers import PARALLEL_STEP_FLOPS
from fedstrata.torch_adapter import TorchTrainerFactory, set_torch_threads

SMALL = [
    "output.run_store=false",
    "rounds.rounds=2",
    "data.num_clients=12",
    "rounds.clients_per_round=8",
    "model.kind=mlp",
    "model.hidden=16",
    "sim.workers=2",
    "sim.threads=1",
]


class ThreadReportingTrainer(FakeTrainer):
    """Reports the process's torch thread count, pid and OMP_NUM_THREADS as metrics."""

    def train(self, params, data, plan, ctx, out) -> TrainResult:
        result = super().train(params, data, plan, ctx, out)
        metrics = {
            **result.metrics,
            "torch_threads": float(torch.get_num_threads()),
            "pid": float(os.getpid()),
            "omp_env": float(os.environ.get("OMP_NUM_THREADS", "0")),
        }
        return TrainResult(result.num_examples, result.num_steps, metrics)


class OneThreadFactory:
    """A factory that, like the built-in one, sets its own thread count (1)."""

    def __call__(self) -> ThreadReportingTrainer:
        torch.set_num_threads(1)
        return ThreadReportingTrainer()


def tasks(n: int) -> list[ClientTask]:
    return [ClientTask(i, i % 12, 0, LocalPlan(lr=0.5)) for i in range(n)]


def train_all(executor, n: int = 24) -> list[dict[str, float]]:
    try:
        return [dict(r.metrics) for r in executor.run(np.zeros(4, np.float32), tasks(n))]
    finally:
        executor.close()


def test_a_federation_is_bit_identical_under_spawn_and_fork():
    """The real torch trainer, two workers each way: same model, same accuracies."""
    forked = run(load_config(overrides=[*SMALL, "sim.start_method=fork"]))
    spawned = run(load_config(overrides=[*SMALL, "sim.start_method=spawn"]))
    assert (forked.workers, spawned.workers) == (2, 2)
    assert forked.simulation.params.tobytes() == spawned.simulation.params.tobytes()
    accuracies = [[m.accuracy for m in r.simulation.rounds] for r in (forked, spawned)]
    assert accuracies[0] == accuracies[1]
    assert all(m.clients_completed == 8 for m in spawned.simulation.rounds)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_every_training_process_runs_the_thread_count_it_was_given(method):
    before = torch.get_num_threads()
    job = ClientJob(trainer_factory=OneThreadFactory(), data=FakeData(), root_seed=1)
    threads = WorkerThreads(3, set_torch_threads)
    ex = ProcessExecutor(job, 4, 2, start_method=method, threads=threads)
    assert ex.description.startswith("2 ")
    metrics = train_all(ex)
    assert {m["torch_threads"] for m in metrics} == {3.0}  # the factory's 1 is overridden
    assert len({m["pid"] for m in metrics}) >= 2  # workers trained, not only this process
    workers_env = {m["omp_env"] for m in metrics if m["pid"] != os.getpid()}
    if method == "spawn":  # set before the child loaded torch
        assert workers_env == {3.0}
    assert torch.get_num_threads() == before  # this process got its own count back


def test_in_process_executor_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    want = 2 if before != 2 else 1
    job = ClientJob(trainer_factory=OneThreadFactory(), data=FakeData(), root_seed=1)
    ex = InProcessExecutor(job, 4, threads=WorkerThreads(want, set_torch_threads))
    assert {m["torch_threads"] for m in train_all(ex, 3)} == {float(want)}
    assert torch.get_num_threads() == before


def test_threads_divide_the_cores_between_the_training_processes():
    assert threads_per_process(0, cores=16) == 16
    assert threads_per_process(3, cores=16) == 4  # 3 workers + this process
    assert threads_per_process(5, cores=16) == 2
    assert threads_per_process(15, cores=16) == 1
    assert threads_per_process(7, cores=2) == 1  # never below one


def test_auto_threads_keep_small_models_on_one_thread():
    """Built-in models are far below the threshold: one thread, whatever the workers."""
    mlp_step = TorchTrainerFactory("mlp", (64,), 10, 128)().flops_per_example * 8
    assert mlp_step < PARALLEL_STEP_FLOPS
    for workers in (0, 1, 7):
        assert worker_threads(SimConfig(), workers, mlp_step).count == 1
    assert auto_threads(0, PARALLEL_STEP_FLOPS, cores=16) == 16  # a large model: the share
    assert auto_threads(3, 1e10, cores=16) == 4
    assert worker_threads(SimConfig(threads=5), 3, mlp_step).count == 5  # explicit wins


def test_auto_start_method_is_fork_on_linux_and_spawn_elsewhere():
    expected = "fork" if sys.platform.startswith("linux") else "spawn"
    assert resolve_start_method("auto") == expected
    assert resolve_start_method("spawn") == "spawn"
    with pytest.raises(ConfigError, match="must be auto, fork or spawn"):
        resolve_start_method("forkserver-ish")


def test_thread_count_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match=r"sim.threads must be >= 1, got 0"):
        WorkerThreads(0, set_torch_threads)


def test_a_killed_spawned_worker_is_restarted_and_the_block_is_unlinked():
    job = ClientJob(trainer_factory=OneThreadFactory(), data=FakeData(), root_seed=1)
    ex = ProcessExecutor(job, 4, 2, start_method="spawn")
    name = ex._block.handle()
    assert isinstance(name, str)
    assert Path("/dev/shm", name).exists() or not sys.platform.startswith("linux")
    try:
        assert len(list(ex.run(np.zeros(4, np.float32), tasks(12)))) == 12
        for proc in ex._procs:
            proc.kill()
            proc.join()
        second = list(ex.run(np.zeros(4, np.float32), tasks(12)))
        assert [r.index for r in second] == list(range(12))
        third = list(ex.run(np.zeros(4, np.float32), tasks(12)))
        assert all(r.error is None for r in third)  # the restarted workers train
        assert len({r.metrics["pid"] for r in third}) >= 2
    finally:
        ex.close()
    assert not Path("/dev/shm", name).exists()
