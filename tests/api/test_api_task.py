"""Issue 14 parts 1, 7, 9: running your own task from a config import string or an object."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fedstrata.api import load_model, run
from fedstrata.config import load_config
from fedstrata.errors import TaskError
from fedstrata.monitoring import RunStore
from fedstrata.torch_adapter import LocalTraining

TASK_MODULE = textwrap.dedent(
    """
    import numpy as np
    import torch
    from torch import nn

    from fedstrata.torch_adapter import Task

    DIM = 5


    def model():
        return nn.Sequential(nn.Linear(DIM, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


    def client_data(cid):
        rng = np.random.default_rng(cid)
        x = rng.standard_normal((12 + 4 * cid, DIM)).astype(np.float32)
        return x, (x.sum(axis=1) > 0).astype(np.int64)


    def test_data():
        return client_data(99)


    def sgd(params):
        return torch.optim.SGD(params, lr=0.1, momentum=0.5)


    def metrics(model, data):
        x, y = data
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
        tp = float(((pred == 1) & (y == 1)).sum())
        f1 = 2 * tp / max(float((pred == 1).sum() + (y == 1).sum()), 1.0)
        return {"accuracy": float((pred == y).mean()), "f1": f1}


    def make_task():
        return Task(model=model, client_data=client_data, num_clients=6, test_data=test_data,
                    optimizer=sgd, evaluate=metrics)
    """
)


def _config(tmp_path: Path, **extra: str) -> Path:
    project = tmp_path / "proj"
    (project / "credit").mkdir(parents=True)
    (project / "credit" / "__init__.py").write_text("")
    (project / "credit" / "task.py").write_text(TASK_MODULE)
    lines = [
        "task: credit.task:make_task",
        "rounds: {rounds: 2}",
        "client: {batch_size: 4, lr: 0.1}",
        "sim: {workers: 0}",
        f"output: {{dir: {tmp_path / 'runs'}, report: false, progress: false}}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    path = project / "fed.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_task_from_config_import_string_and_model_out(tmp_path: Path) -> None:
    """Parts 1 and 7: the config names the task; model.pt loads into the user's module."""
    path = _config(tmp_path)
    config = load_config(path)
    assert config.project_dir == path.parent.resolve()
    result = run(config)
    rounds = result.simulation.rounds
    assert len(rounds) == 2
    assert all(r.clients_completed == 6 for r in rounds)
    assert rounds[-1].accuracy is not None
    assert "test_f1" in rounds[-1].extras
    assert result.run_dir is not None
    assert (result.run_dir / "model.pt").is_file()

    from credit.task import make_task  # importable now: the project dir is on sys.path

    module = load_model(result.run_dir, make_task())
    state = module.state_dict()
    assert "1.running_mean" in state
    assert "1.num_batches_tracked" in state
    flat = np.concatenate(
        [p.detach().numpy().ravel() for p in module.parameters() if p.requires_grad]
    )
    assert np.array_equal(flat, result.simulation.params[: flat.size])
    saved = torch.load(result.run_dir / "model.pt", weights_only=True)
    assert torch.equal(saved["3.weight"], module[3].weight)
    assert RunStore.open(result.run_dir).rounds()[-1].extras["test_f1"] >= 0


def test_task_object_through_the_python_api_and_forked_workers(tmp_path: Path) -> None:
    """Part 1: run() takes the Task object; forked workers give the same bits."""
    path = _config(tmp_path)
    config = load_config(path, overrides=["output.run_store=false"])
    sys.path.insert(0, str(path.parent))  # the user's own import (the fixture restores it)
    from credit.task import make_task

    task = make_task()
    inprocess = run(config, task=task)
    forked = run(config.model_copy(update={"sim": config.sim.model_copy(update={"workers": 1})}),
                 task=task)  # fmt: skip
    assert forked.workers == 1
    assert inprocess.simulation.params.tobytes() == forked.simulation.params.tobytes()


def test_failing_client_counts_as_failed_and_the_round_goes_on(tmp_path: Path) -> None:
    """Part 9: a client whose data function raises fails alone, with its reason stored."""
    from fedstrata.torch_adapter import Task

    def model() -> torch.nn.Module:
        return torch.nn.Linear(3, 2)

    def data(cid: int) -> tuple[np.ndarray, np.ndarray]:
        if cid == 2:
            raise OSError("branch 2's table is missing")
        return np.ones((4, 3), np.float32), np.array([0, 1, 0, 1])

    config = load_config(
        overrides=[
            "rounds.rounds=2", "rounds.clients_per_round=4", "sim.workers=0",
            f"output.dir={tmp_path}", "output.report=false", "output.progress=false",
        ]
    )  # fmt: skip
    result = run(config, task=Task(model=model, client_data=data, num_clients=4))
    assert [r.clients_failed for r in result.simulation.rounds] == [1, 1]
    assert [r.clients_completed for r in result.simulation.rounds] == [3, 3]
    assert result.run_dir is not None
    failures = RunStore.open(result.run_dir).failures()
    assert [f.client_id for f in failures] == [2, 2]
    assert all("data(2) raised OSError: branch 2's table is missing" in f.reason for f in failures)
    with pytest.raises(TaskError, match=r"factory .*data_model_fails raised OSError: no weights"):
        run(config, task=Task(model=data_model_fails, client_data=data, num_clients=4))


def data_model_fails() -> torch.nn.Module:
    raise OSError("no weights file")


def _w1_mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def _w1_sgd(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05)


def _w1_loop(model: torch.nn.Module, data: object, ctx: LocalTraining) -> None:
    for x, y in ctx.batches():
        ctx.optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        ctx.optimizer.step()


def test_w1_as_a_user_task_matches_the_builtin_preset_every_round() -> None:
    """Issue 14 must-show: W1's MLP as a plain nn.Module with torch.optim.SGD (and with
    a custom loop) reaches the built-in preset's accuracy after every round, bit for bit."""
    from fedstrata.torch_adapter import Task

    config = load_config(
        preset="w1", overrides=["rounds.rounds=3", "sim.workers=0", "output.run_store=false"]
    )
    builtin = run(config).simulation
    for task in (
        Task(model=_w1_mlp, optimizer=_w1_sgd),
        Task(model=_w1_mlp, optimizer=_w1_sgd, train=_w1_loop),
    ):
        mine = run(config, task=task).simulation
        assert [r.accuracy for r in mine.rounds] == [r.accuracy for r in builtin.rounds]
        assert mine.params.tobytes() == builtin.params.tobytes()


def test_task_on_ray_actors_gives_the_same_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14 part 1 (with part 2's Ray backend): local Ray actors import the task
    module from the project directory and train it exactly as this process does."""
    from fedstrata.sim.ray_executor import ray_available

    if not ray_available():
        pytest.skip("Ray is not installed")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    path = _config(tmp_path)
    config = load_config(path, overrides=["output.run_store=false"])
    local = run(config)
    on_ray = run(
        config.model_copy(update={"sim": config.sim.model_copy(update={"backend": "ray"})})
    )
    assert "Ray actors" in on_ray.executor
    assert on_ray.simulation.params.tobytes() == local.simulation.params.tobytes()
