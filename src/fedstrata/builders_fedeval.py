"""Where federated evaluation's data come from, for the simulator and the runtime
(Issue 14 part 3; one rule for both drivers, so a deployment evaluates each client on
the held-out data the simulation uses and trains on the rest).

* the task's ``client_test_data(cid)``, when it has one (training data unchanged);
* else ``evaluation.holdout`` of each client's examples, held out from training
  (built-in and npz data: :func:`fedstrata.data.client_test_split` with the run's
  ``holdout`` generator; a task's data:
  :func:`fedstrata.torch_adapter.holdout.holdout_part`, seeded per client);
* ``evaluation.holdout: 0``: the clients' training data itself (a measure of fit).

:func:`population_sources` splits a whole population (the simulator, and the
runtime's built-in data, which every process builds); :class:`TaskClientSplit` one
client's own data on its machine (the runtime's client agent of a task).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from fedstrata.config import FedConfig
from fedstrata.coordinator.fedeval import FedEvalSettings
from fedstrata.core.context import derive_rng
from fedstrata.core.training import ClientPopulation, LocalData
from fedstrata.data import FederatedDataset, client_test_split
from fedstrata.errors import ConfigError

if TYPE_CHECKING:
    from fedstrata.torch_adapter import Task

__all__ = [
    "EvalSource",
    "TaskClientSplit",
    "fed_eval_settings",
    "population_sources",
    "refuse_holdout_with_test_data",
]


class EvalSource(Protocol):
    """Anything that hands out a client's evaluation data by id."""

    def client(self, client_id: int) -> LocalData: ...


def fed_eval_settings(config: FedConfig, eligible: NDArray[np.intp]) -> FedEvalSettings:
    """The cadence and sample size of ``config.evaluation`` over ``eligible`` clients."""
    e = config.evaluation
    return FedEvalSettings(e.every, e.sample_size(int(eligible.size)), config.seed)


def refuse_holdout_with_test_data(config: FedConfig, task: Task) -> None:
    """Raises: ConfigError: ``evaluation.holdout`` set explicitly while the task brings
    its own ``client_test_data``."""
    if "holdout" in config.evaluation.model_fields_set:
        raise ConfigError(
            f"evaluation.holdout splits each client's data, but task {task.name!r} "
            "brings its own client_test_data: remove one of them"
        )


def population_sources(
    config: FedConfig, dataset: ClientPopulation, task: Task | None
) -> tuple[ClientPopulation, EvalSource, NDArray[np.intp]]:
    """``(training population, evaluation source, eligible clients)`` of ``dataset``.

    Raises:
        ConfigError: holdout with a task's ``client_test_data``; data that cannot be
            split (a DataLoader, an unknown population).
        TaskError: the task's data functions fail.
    """
    holdout = config.evaluation.holdout
    everyone = np.arange(dataset.num_clients, dtype=np.intp)
    if task is not None and task.client_test_data is not None:
        refuse_holdout_with_test_data(config, task)
        from fedstrata.torch_adapter.holdout import TaskTestSource

        return dataset, TaskTestSource(task), everyone
    if holdout == 0:
        return dataset, dataset, np.flatnonzero(dataset.client_sizes()).astype(np.intp)
    if isinstance(dataset, FederatedDataset):
        rng = derive_rng(config.seed, 0, -1, "holdout")
        train, held = client_test_split(dataset, holdout, rng)
        return train, held, np.flatnonzero(held.client_sizes()).astype(np.intp)
    from fedstrata.torch_adapter import TaskPopulation
    from fedstrata.torch_adapter.holdout import HoldoutPopulation

    if task is None or not isinstance(dataset, TaskPopulation):
        raise ConfigError(f"federated evaluation cannot split a {type(dataset).__name__}")
    split = HoldoutPopulation(dataset, task, holdout, config.seed)
    return split, split.held_out, np.flatnonzero(split.held_out_sizes()).astype(np.intp)


@dataclass(eq=False)
class TaskClientSplit:
    """One client's training and evaluation data of a task, from its own data loader.

    ``load(cid)`` loads the client's whole data (``client_data(cid)``, or
    ``local_data(DIR)`` on a client started with ``--data DIR``). :meth:`train` and
    :meth:`held_out` split it as the simulator's
    :class:`~fedstrata.torch_adapter.holdout.HoldoutPopulation` does (the last load is
    kept, so a client reads its data once); with the task's ``client_test_data`` the
    training data is the whole and the evaluation data is that function's.
    """

    config: FedConfig
    task: Task
    load: Callable[[int], LocalData]

    def __post_init__(self) -> None:
        if self.task.client_test_data is not None:
            refuse_holdout_with_test_data(self.config, self.task)
        self._last: tuple[int, LocalData] | None = None

    def _full(self, client_id: int) -> LocalData:
        if self._last is None or self._last[0] != client_id:
            self._last = (client_id, self.load(client_id))
        return self._last[1]

    def _part(self, client_id: int, *, train: bool) -> LocalData:
        from fedstrata.torch_adapter.data import ClientData
        from fedstrata.torch_adapter.holdout import holdout_part

        full = self._full(client_id)
        if not isinstance(full, ClientData):
            raise ConfigError(f"federated evaluation cannot split a {type(full).__name__}")
        return holdout_part(
            full, self.config.evaluation.holdout, self.config.seed, client_id, train=train
        )

    def train(self, client_id: int) -> LocalData:
        """The client's training data (all of it but its held-out part)."""
        if self.task.client_test_data is not None or self.config.evaluation.holdout == 0:
            return self._full(client_id)
        return self._part(client_id, train=True)

    def held_out(self, client_id: int) -> LocalData:
        """The client's evaluation data."""
        if self.task.client_test_data is not None:
            from fedstrata.torch_adapter.holdout import TaskTestSource

            return TaskTestSource(self.task).client(client_id)
        if self.config.evaluation.holdout == 0:
            return self._full(client_id)
        return self._part(client_id, train=False)
