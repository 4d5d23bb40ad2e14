"""Each client's held-out data for federated evaluation (Issue 14 part 3).

Two sources of a client's evaluation data for a task:

* :class:`TaskTestSource`: the task's own ``client_test_data(cid)``;
* :class:`HoldoutPopulation`: a share of each client's ``client_data(cid)`` held out
  from training. Client ``c`` with ``n`` examples holds out ``min(floor(fraction *
  n), n - 1)`` of them, drawn by a generator seeded from (seed, ``c``); both parts
  keep the original order (the rule of :func:`fedstrata.data.holdout_split`). The
  held-out part has the type the task returned: ``(x, y)`` arrays or tensors are
  indexed, a ``TensorDataset`` becomes a smaller ``TensorDataset``, any other
  ``Dataset`` a ``torch.utils.data.Subset``. A ``DataLoader`` cannot be split: give
  ``client_test_data`` instead.
"""

from __future__ import annotations

from typing import Any, final

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader, Subset, TensorDataset

from fedstrata.core.context import derive_rng
from fedstrata.core.training import LocalData
from fedstrata.core.usercode import describe
from fedstrata.errors import ConfigError, TaskError
from fedstrata.torch_adapter.data import ClientData, TaskPopulation, call_data_fn, client_data
from fedstrata.torch_adapter.task import Task

__all__ = ["HoldoutPopulation", "TaskTestSource", "held_out_counts", "holdout_part"]


def held_out_counts(sizes: NDArray[np.intp], fraction: float) -> NDArray[np.intp]:
    """Examples each client holds out: ``min(floor(fraction * n), n - 1)``, at least 0."""
    held = np.minimum(np.floor(fraction * sizes).astype(np.intp), np.maximum(sizes - 1, 0))
    return np.asarray(held, dtype=np.intp)


@final
class TaskTestSource:
    """Client ``cid``'s evaluation data from the task's ``client_test_data(cid)``."""

    def __init__(self, task: Task) -> None:
        """Raises: TaskError: the task has no ``client_test_data``."""
        if task.client_test_data is None:
            raise TaskError(f"task {task.name!r} has no client_test_data")
        self._load = task.client_test_data

    def client(self, client_id: int) -> LocalData:
        """Raises: TaskError: the user's function failed or returned unusable data."""
        return call_data_fn(self._load, int(client_id))


def _rows(values: Any, index: NDArray[np.intp]) -> Any:
    if isinstance(values, torch.Tensor):
        return values[torch.from_numpy(index)]
    return np.asarray(values)[index]


def _take(source: Any, index: NDArray[np.intp]) -> Any:
    """The rows ``index`` of ``source``, of the same kind."""
    if isinstance(source, tuple | list):
        return (_rows(source[0], index), _rows(source[1], index))
    if isinstance(source, TensorDataset):
        pick = torch.from_numpy(index)
        return TensorDataset(*(t[pick] for t in source.tensors))
    return Subset(source, index.tolist())


@final
class HoldoutPopulation:
    """A task's clients with a share of each client's data held out from training.

    Implements :class:`fedstrata.core.ClientPopulation` (the training parts) and, as
    :attr:`held_out`, a source of the held-out parts.
    """

    def __init__(self, base: TaskPopulation, task: Task, fraction: float, seed: int) -> None:
        """Raises: ConfigError: ``fraction`` outside (0, 1), or the data is a DataLoader."""
        if not 0 < fraction < 1:
            raise ConfigError(f"evaluation.holdout must be in (0, 1) here, got {fraction}")
        self._base, self._fraction, self._seed = base, fraction, seed
        self._who = describe(task.client_data)
        sizes = base.client_sizes()
        self._held = held_out_counts(sizes, fraction)
        self._sizes = sizes - self._held
        first = int(np.flatnonzero(sizes)[0]) if sizes.any() else 0
        if isinstance(base.client(first).source, DataLoader):
            raise ConfigError(
                f"{self._who} returns a DataLoader, which fedstrata cannot split for "
                "federated evaluation: return a Dataset, or give Task.client_test_data"
            )
        self.held_out = _HeldOut(self)

    @property
    def num_clients(self) -> int:
        return self._base.num_clients

    @property
    def test(self) -> LocalData | None:
        return self._base.test

    def client_sizes(self) -> NDArray[np.intp]:
        """Training examples of every client (after the hold-out)."""
        return self._sizes

    def held_out_sizes(self) -> NDArray[np.intp]:
        """Held-out examples of every client."""
        return self._held

    def client(self, client_id: int) -> ClientData:
        """Client ``client_id``'s training part."""
        return self.part(client_id, train=True)

    def part(self, client_id: int, *, train: bool) -> ClientData:
        """Client ``client_id``'s training part, or its held-out part.

        Raises:
            TaskError: the user's function failed, or returned a DataLoader.
        """
        full = self._base.client(client_id)
        return holdout_part(full, self._fraction, self._seed, client_id, train=train)


def holdout_part(
    full: ClientData, fraction: float, seed: int, client_id: int, *, train: bool
) -> ClientData:
    """Client ``client_id``'s training part of ``full``, or its held-out part (the rule
    of the module docstring; the runtime's client agent splits its own data with it).

    Raises:
        TaskError: ``full`` is a DataLoader.
    """
    if isinstance(full.source, DataLoader):
        raise TaskError(f"{full.origin} returned a DataLoader, which cannot be split")
    n = full.num_examples
    rng = derive_rng(seed, 0, int(client_id), "holdout")
    is_held = np.zeros(n, dtype=bool)
    is_held[rng.permutation(n)[: held_out_counts(np.array([n]), fraction)[0]]] = True
    index = np.flatnonzero(~is_held if train else is_held).astype(np.intp)
    part = "training" if train else "held-out"
    return client_data(_take(full.source, index), f"{full.origin} ({part} part)")


@final
class _HeldOut:
    """The held-out parts of a :class:`HoldoutPopulation`, by client id."""

    def __init__(self, population: HoldoutPopulation) -> None:
        self._population = population

    def client(self, client_id: int) -> ClientData:
        return self._population.part(client_id, train=False)
