"""Build federated evaluation from the ``evaluation`` section (Issue 14 part 3).

Where each client's evaluation data comes from:

* the task's ``client_test_data(cid)``, when it has one;
* else ``evaluation.holdout`` of each client's examples, held out from training
  (built-in and npz data: :func:`fedstrata.data.client_test_split`; a task's
  ``client_data``: :class:`fedstrata.torch_adapter.holdout.HoldoutPopulation`);
* ``evaluation.holdout: 0``: the clients' training data itself (a measure of fit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fedstrata.config import FedConfig
from fedstrata.core.context import derive_rng
from fedstrata.core.training import ClientPopulation
from fedstrata.data import FederatedDataset, client_test_split
from fedstrata.errors import ConfigError
from fedstrata.sim.fedeval import FederatedEvaluator, FedEvalSettings
from fedstrata.sim.tasks import ClientSource

if TYPE_CHECKING:
    from fedstrata.torch_adapter import Task

__all__ = ["FederatedSplit", "federated_split"]


@dataclass(frozen=True, eq=False)
class FederatedSplit:
    """The training population, each client's evaluation data, and the evaluator.

    ``eval_data`` and ``evaluator`` are None when federated evaluation is off.
    """

    population: ClientPopulation
    eval_data: ClientSource | None = None
    evaluator: FederatedEvaluator | None = None


def federated_split(
    config: FedConfig, dataset: ClientPopulation, task: Task | None
) -> FederatedSplit:
    """Split ``dataset`` for federated evaluation as ``config.evaluation`` asks.

    Raises:
        ConfigError: ``evaluation.holdout`` set explicitly while the task brings its
            own ``client_test_data``; a task's data that cannot be split (a
            DataLoader); no client with evaluation data.
        TaskError: the task's data functions fail.
    """
    e = config.evaluation
    if not e.enabled:
        return FederatedSplit(dataset)
    population, source, eligible = _sources(config, dataset, task)
    settings = FedEvalSettings(e.every, e.sample_size(int(eligible.size)), config.seed)
    return FederatedSplit(population, source, FederatedEvaluator(settings, eligible))


def _sources(
    config: FedConfig, dataset: ClientPopulation, task: Task | None
) -> tuple[ClientPopulation, ClientSource, NDArray[np.intp]]:
    holdout = config.evaluation.holdout
    everyone = np.arange(dataset.num_clients, dtype=np.intp)
    if task is not None and task.client_test_data is not None:
        if "holdout" in config.evaluation.model_fields_set:
            raise ConfigError(
                f"evaluation.holdout splits each client's data, but task {task.name!r} "
                "brings its own client_test_data: remove one of them"
            )
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
