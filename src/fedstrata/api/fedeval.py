"""Build federated evaluation from the ``evaluation`` section (Issue 14 part 3).

Where each client's evaluation data comes from:

* the task's ``client_test_data(cid)``, when it has one;
* else ``evaluation.holdout`` of each client's examples, held out from training
  (built-in and npz data: :func:`fedstrata.data.client_test_split`; a task's
  ``client_data``: :class:`fedstrata.torch_adapter.holdout.HoldoutPopulation`);
* ``evaluation.holdout: 0``: the clients' training data itself (a measure of fit).

The rule is :func:`fedstrata.builders_fedeval.population_sources`, which the
deployment runtime uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedstrata.builders_fedeval import fed_eval_settings, population_sources
from fedstrata.config import FedConfig
from fedstrata.core.training import ClientPopulation
from fedstrata.sim.fedeval import FederatedEvaluator
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
    population, source, eligible = population_sources(config, dataset, task)
    settings = fed_eval_settings(config, eligible)
    return FederatedSplit(population, source, FederatedEvaluator(settings, eligible))
