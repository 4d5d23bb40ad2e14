"""Issue 14 part 3: holding out a share of each client's task data for evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from fedstrata.errors import TaskError
from fedstrata.torch_adapter import Task, TaskPopulation
from fedstrata.torch_adapter.holdout import HoldoutPopulation, TaskTestSource, held_out_counts


class Rows(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((3,), float(i)), i % 2


def arrays(cid: int) -> tuple[np.ndarray, np.ndarray]:
    n = 4 + 3 * cid
    return np.arange(n * 3, dtype=np.float32).reshape(n, 3), np.arange(n) % 2


def tensors(cid: int) -> TensorDataset:
    x, y = arrays(cid)
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def rows(cid: int) -> Rows:
    return Rows(4 + 3 * cid)


def _ids(part: object) -> list[int]:
    """Row ids of a part (the first feature is 3 * row for arrays, row for Rows)."""
    if isinstance(part, tuple):
        return [int(v) // 3 for v in np.asarray(part[0])[:, 0]]
    if isinstance(part, TensorDataset):
        return [int(v) // 3 for v in part.tensors[0][:, 0]]
    assert isinstance(part, Subset)
    return list(part.indices)


@pytest.mark.parametrize("load", [arrays, tensors, rows])
def test_every_client_is_split_into_disjoint_parts_of_its_own_kind(load) -> None:
    task = Task(model=lambda: nn.Linear(3, 2), client_data=load, num_clients=4)
    split = HoldoutPopulation(TaskPopulation(task), task, 0.25, seed=3)
    sizes = np.array([4, 7, 10, 13])
    np.testing.assert_array_equal(split.held_out_sizes(), held_out_counts(sizes, 0.25))
    np.testing.assert_array_equal(split.client_sizes(), sizes - [1, 1, 2, 3])
    for c in range(4):
        train, held = split.client(c), split.held_out.client(c)
        assert type(train.source) is type(held.source)
        ids_train, ids_held = _ids(train.source), _ids(held.source)
        assert sorted(ids_train + ids_held) == list(range(sizes[c]))
        assert ids_train == sorted(ids_train)
        assert ids_held == sorted(ids_held)
        assert _ids(split.held_out.client(c).source) == ids_held  # seeded: the same each call


def test_client_test_data_source_names_the_function() -> None:
    def broken(cid: int) -> object:
        raise OSError("no file")

    task = Task(model=lambda: nn.Linear(3, 2), client_test_data=broken)
    with pytest.raises(TaskError, match=r"broken\(2\) raised OSError: no file"):
        TaskTestSource(task).client(2)
    assert held_out_counts(np.array([0, 1, 5]), 0.5).tolist() == [0, 0, 2]
