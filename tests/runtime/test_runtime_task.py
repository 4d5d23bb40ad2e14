"""Issue 14 part 2: the gRPC client agent trains the user's task on its own local data.

A real deployment on loopback: the center and three clients are OS processes. The
task (a module in the project folder, named by the config's ``task:``) has no
``client_data``: each client reads only the CSV folder ``fedstrata client --data``
gives it, through the task's ``local_data``; the center reads no data at all (it
builds the model for its layout and initial weights). Every call of ``local_data`` is
logged with its process id, so the test checks who read what.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rthelpers import free_port

from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.runtime import TokenTable, deployment, new_token

N_CLIENTS = 3
ROUNDS = 4
LIMIT_S = 60.0

TASK_MODULE = '''
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedstrata.torch_adapter import Task

LOG = Path(__file__).with_name("loads.log")


def model():
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))


def read_branch(folder):
    """This machine's own table: folder/branch.csv with columns f0..f3,label."""
    with LOG.open("a") as log:
        log.write(f"{os.getpid()} {Path(folder).name}\\n")
    table = np.loadtxt(Path(folder) / "branch.csv", delimiter=",", skiprows=1)
    return table[:, :4].astype(np.float32), table[:, 4].astype(np.int64)


task = Task(model=model, local_data=read_branch, num_clients=3, name="branches")
'''

CONFIG = f"""
task: branch_task:task
seed: 7
rounds: {{rounds: {ROUNDS}, deadline_s: 40}}
client: {{epochs: 2, steps: null, batch_size: 16, lr: 0.1}}
sim: {{workers: 0}}
output: {{run_store: false}}
"""

WEIGHTS = np.array([1.5, -2.0, 1.0, 0.5])


def _table(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    x = rng.normal(shift, 1.0, size=(n, 4))
    y = (x @ WEIGHTS > shift * WEIGHTS.sum()).astype(np.float64)
    return np.column_stack([x, y])


def _project(root: Path) -> tuple[Path, list[Path]]:
    """The project folder (task module, config) and one data folder per client."""
    project = root / "project"
    project.mkdir()
    (project / "branch_task.py").write_text(TASK_MODULE)
    (project / "fed.yaml").write_text(CONFIG)
    rng = np.random.default_rng(0)
    folders = []
    for cid in range(N_CLIENTS):
        folder = root / f"branch{cid}"
        folder.mkdir()
        table = _table(rng, 120 + 60 * cid, shift=0.3 * cid)  # non-IID sizes and features
        header = "f0,f1,f2,f3,label"
        np.savetxt(folder / "branch.csv", table, delimiter=",", header=header, comments="")
        folders.append(folder)
    return project, folders


def _center_main(config: Path, port: int, tokens: dict[int, str], out: Any) -> None:
    from fedstrata.runtime.commands import run_center

    result = asyncio.run(
        run_center(
            load_config(config),
            address=f"127.0.0.1:{port}",
            tokens=TokenTable(tokens),
            tls=None,
            mutual=False,
        )
    )
    accepted = [len(r.outcome.accepted) for r in result.rounds]
    out.put(("center", os.getpid(), accepted, result.params))


def _client_main(config: Path, port: int, token: str, job: tuple[int, Path], out: Any) -> None:
    from fedstrata.runtime.commands import run_client

    cid, data = job
    report = asyncio.run(
        run_client(
            load_config(config),
            server=f"127.0.0.1:{port}",
            client_id=cid,
            token=token,
            tls=None,
            data_dir=data,
        )
    )
    out.put(("client", os.getpid(), cid, report.rounds))


def _evaluate(config: Path, params: np.ndarray, folders: list[Path]) -> tuple[float, float]:
    """Accuracy and loss of ``params`` on every client's rows (read here by hand)."""
    dep = deployment(load_config(config))  # the center's build: no data read
    tables = [np.loadtxt(f / "branch.csv", delimiter=",", skiprows=1) for f in folders]
    rows = np.concatenate(tables)
    data = (rows[:, :4].astype(np.float32), rows[:, 4].astype(np.int64))
    from fedstrata.torch_adapter.data import client_data

    result = dep.trainer.evaluate(params, client_data(data, "all branches"))
    return result.accuracy, result.loss


def test_each_client_process_trains_on_its_own_folder_and_the_center_reads_none(
    tmp_path, processes
):
    """Issue 14 part 2 must-show: per-client data folders; a center with no data."""
    ctx, started = processes
    project, folders = _project(tmp_path)
    config = project / "fed.yaml"
    tokens = {cid: new_token() for cid in range(N_CLIENTS)}
    port, out = free_port(), ctx.Queue()

    def start(target: Any, *args: Any) -> Any:
        p = ctx.Process(target=target, args=args, daemon=True)
        p.start()
        started.append(p)
        return p

    start(_center_main, config, port, tokens, out)
    for cid in range(N_CLIENTS):
        start(_client_main, config, port, tokens[cid], (cid, folders[cid]), out)
    results = [out.get(timeout=LIMIT_S) for _ in range(1 + N_CLIENTS)]

    _, center_pid, accepted, params = next(r for r in results if r[0] == "center")
    assert accepted == [N_CLIENTS] * ROUNDS
    clients = {r[2]: r for r in results if r[0] == "client"}
    assert all(clients[cid][3] == list(range(ROUNDS)) for cid in range(N_CLIENTS))

    loads = [line.split() for line in (project / "loads.log").read_text().splitlines()]
    readers = {int(pid): folder for pid, folder in loads}
    assert center_pid not in readers  # the center never read data
    assert readers == {clients[cid][1]: f"branch{cid}" for cid in range(N_CLIENTS)}

    initial = deployment(load_config(config)).initial_params()
    acc0, loss0 = _evaluate(config, initial, folders)
    acc, loss = _evaluate(config, params, folders)
    assert loss < 0.7 * loss0
    assert acc > max(0.85, acc0 + 0.2)


def test_data_dir_needs_a_task_with_local_data(tmp_path):
    """Issue 14 part 2: ``--data`` without a task that can read it is refused."""
    with pytest.raises(ConfigError, match="--data needs a task with local_data"):
        deployment(load_config(overrides=["model.kind=logreg"]), data_dir=tmp_path)


def test_a_client_without_local_data_or_client_data_is_refused(tmp_path):
    """Issue 14 part 2: a task with neither data function tells the client what to pass."""
    project, _ = _project(tmp_path)
    (project / "bare_task.py").write_text(
        "from torch import nn\nfrom fedstrata.torch_adapter import Task\n"
        "task = Task(model=lambda: nn.Linear(4, 2), num_clients=2)\n"
    )
    dep = deployment(load_config(overrides=["task=bare_task:task", f"project_dir={project}"]))
    assert dep.num_clients == 2  # the center builds: it needs no data
    with pytest.raises(ConfigError, match="give client 1 its data directory with --data DIR"):
        dep.client(object(), 1)  # type: ignore[arg-type]
