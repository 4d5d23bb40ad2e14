"""Federated evaluation of a user's task in the runtime: each client agent splits its own
data (``client_data(cid)``, or its ``--data`` folder's ``local_data``) exactly as the
simulator splits the task's population, so the figures equal the simulator's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
from rthelpers import run_federation, tokens_for
from torch import nn

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.runtime import CenterServer, Deployment, GrpcLink, TokenTable, deployment
from fedstrata.torch_adapter import Task

N = 4
BASE = [
    "output.run_store=false",
    "sim.workers=0",
    f"data.num_clients={N}",
    "rounds.clients_per_round=3",
    "rounds.rounds=2",
    "client.steps=2",
    "client.epochs=null",
    "client.batch_size=4",
    "evaluation.every=1",
    "evaluation.clients=3",
    "evaluation.holdout=0.3",
    "seed=3",
]


def _model() -> nn.Module:
    torch.manual_seed(0)  # the factory is pinned by the run's seed anyway
    return nn.Linear(4, 2)


def _rows(cid: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + cid)
    n = 8 + 3 * cid  # every client holds some out: floor(0.3 * n) >= 2
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + 0.3 * cid > 0).astype(np.int64)


def _local(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    return _rows(int(Path(folder).name))


TASK = Task(model=_model, client_data=_rows, local_data=_local, num_clients=N, name="rows")


def _same(runtime, sim) -> None:
    assert len(runtime) == len(sim) == 2
    for ours, theirs in zip(runtime, sim, strict=True):
        assert ours.round_idx == theirs.round_idx
        assert ours.clients_failed == theirs.clients_failed == 0
        assert ours.results == theirs.results
        assert ours.distributions == theirs.distributions


def test_task_clients_evaluate_their_held_out_part_as_in_the_simulator():
    cfg = load_config(overrides=BASE)
    sim = run(cfg, task=TASK).simulation
    result, _ = asyncio.run(run_federation(deployment(cfg, task=TASK)))
    assert result.params.tobytes() == sim.params.tobytes()  # trained on the training parts
    _same(result.fed_evals, sim.fed_evals)


async def _own_folders(center_dep: Deployment, deps: dict[int, Deployment]):
    tokens = tokens_for(N)
    center = center_dep.center()
    async with CenterServer(center, TokenTable(tokens)) as server:

        async def one(cid: int):
            async with GrpcLink(server.target, cid, tokens[cid]) as link:
                return await deps[cid].client(link, cid).run()

        async with asyncio.TaskGroup() as tg:
            main = tg.create_task(center.run(center_dep.initial_params()))
            for cid in range(N):
                tg.create_task(one(cid))
    return main.result()


def test_clients_with_data_folders_evaluate_their_own_held_out_part(tmp_path):
    cfg = load_config(overrides=BASE)
    sim = run(cfg, task=TASK).simulation
    folders = {cid: tmp_path / str(cid) for cid in range(N)}
    for folder in folders.values():
        folder.mkdir()
    deps = {cid: deployment(cfg, task=TASK, data_dir=folders[cid]) for cid in range(N)}
    result = asyncio.run(_own_folders(deployment(cfg, task=TASK), deps))
    assert result.params.tobytes() == sim.params.tobytes()
    _same(result.fed_evals, sim.fed_evals)


def test_a_task_client_without_held_out_examples_fails_its_evaluation_with_the_reason():
    """The center holds no task data, so every client is eligible; a client too small to
    hold anything out (1 example) reports why instead of a result."""

    def tiny(cid: int):
        x, y = _rows(cid)
        return (x[:1], y[:1]) if cid == 0 else (x, y)

    task = Task(model=_model, client_data=tiny, num_clients=N, name="tiny")
    cfg = load_config(overrides=[*BASE, f"evaluation.clients={N}"])
    result, _ = asyncio.run(run_federation(deployment(cfg, task=task)))
    for record in result.rounds:
        assert record.fed_eval is not None
        assert record.fed_eval.clients_failed == 1
        (failure,) = record.fed_eval_failures
        assert failure.client_id == 0
        assert "no evaluation examples" in failure.reason


def test_holdout_with_the_tasks_own_test_data_is_refused():
    task = Task(model=_model, client_data=_rows, client_test_data=_rows, num_clients=N)
    cfg = load_config(overrides=BASE)
    with pytest.raises(Exception, match="client_test_data"):
        deployment(cfg, task=task)
