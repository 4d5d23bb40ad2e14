"""One client's own split of a task's data (``builders_fedeval.TaskClientSplit``) equals
the simulator's split of the whole population (``HoldoutPopulation``)."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from fedstrata.builders_fedeval import TaskClientSplit, population_sources
from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.torch_adapter import Task, TaskPopulation
from fedstrata.torch_adapter.data import call_data_fn

N = 3
BASE = [f"data.num_clients={N}", "rounds.clients_per_round=2", "evaluation.every=1"]


def _rows(cid: int):
    rng = np.random.default_rng(cid)
    n = 10 + cid
    return rng.normal(size=(n, 2)).astype(np.float32), np.arange(n, dtype=np.int64) + 100 * cid


TASK = Task(model=lambda: nn.Linear(2, 2), client_data=_rows, num_clients=N)


def _labels(data) -> list[int]:
    return data.tensors[1].tolist()


@pytest.mark.parametrize("holdout", ["0.3", "0"])
def test_a_clients_own_split_equals_the_simulators(holdout):
    cfg = load_config(overrides=[*BASE, f"evaluation.holdout={holdout}"])
    population, held, _ = population_sources(cfg, TaskPopulation(TASK), TASK)
    split = TaskClientSplit(cfg, TASK, lambda cid: call_data_fn(_rows, cid))
    for cid in range(N):
        assert _labels(split.train(cid)) == _labels(population.client(cid))
        assert _labels(split.held_out(cid)) == _labels(held.client(cid))
    if holdout != "0":  # the parts are disjoint and cover the client's data
        train, test = _labels(split.train(1)), _labels(split.held_out(1))
        assert not set(train) & set(test)
        assert sorted(train + test) == _labels(call_data_fn(_rows, 1))
        assert len(test) == 3


def test_an_explicit_holdout_with_the_tasks_test_data_is_refused():
    task = Task(model=lambda: nn.Linear(2, 2), client_data=_rows, client_test_data=_rows,
                num_clients=N)  # fmt: skip
    cfg = load_config(overrides=[*BASE, "evaluation.holdout=0.2"])
    with pytest.raises(ConfigError, match="client_test_data"):
        TaskClientSplit(cfg, task, lambda cid: call_data_fn(_rows, cid))
