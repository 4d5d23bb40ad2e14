"""Build the runtime's federated evaluation from the ``evaluation`` section.

Each party splits data as the simulator does (:mod:`fedstrata.builders_fedeval`):

* built-in data (built in every process): the whole population is split with the
  simulator's generator; a client trains on its training part and evaluates on its
  held-out part, and the center draws each sample from the same eligible clients
  (those with held-out examples) as the simulator;
* a task: each client splits its own data on its machine (``client_data(cid)``, or
  ``local_data(DIR)`` under ``--data DIR``), seeded per client as the simulator's
  :class:`~fedstrata.torch_adapter.holdout.HoldoutPopulation`; or evaluates on the
  task's ``client_test_data(cid)``. The center holds no data, so every client is
  eligible; a client whose held-out part is empty (fewer than ``1 / holdout``
  examples), which the simulator would not sample, fails its evaluation with that
  reason.

Under FedBuff (``scheduling.async``) a "round" is a server step, as in the simulator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fedstrata.builders_fedeval import TaskClientSplit, fed_eval_settings, population_sources
from fedstrata.core.training import LocalData
from fedstrata.data import FederatedDataset
from fedstrata.runtime.fedeval import EvalDesk, EvalPlan

if TYPE_CHECKING:
    from fedstrata.runtime.build import Deployment
    from fedstrata.runtime.center import Center
    from fedstrata.torch_adapter import Task

__all__ = ["FedEvalSetup", "center_desk", "split_deployment", "tier_desk"]


@dataclass(frozen=True, eq=False)
class FedEvalSetup:
    """Where evaluation data come from: ``eval_data(cid)`` (on the client's machine)
    and the clients the center samples from (sorted)."""

    eval_data: Callable[[int], LocalData]
    eligible: NDArray[np.intp]


def split_deployment(
    dep: Deployment, *, dataset: FederatedDataset | None = None, task: Task | None = None
) -> Deployment:
    """``dep`` training on each client's training part, with its evaluation data
    (unchanged when ``evaluation.every`` is 0)."""
    cfg = dep.config
    if not cfg.evaluation.enabled:
        return dep
    if dataset is not None:
        train, held, eligible = population_sources(cfg, dataset, None)
        setup = FedEvalSetup(held.client, eligible)
        largest = int(train.client_sizes().max())  # the simulator's, of the training parts
        return dataclasses.replace(
            dep, local_data=train.client, fed_eval=setup, largest_client=largest
        )
    assert task is not None
    split = TaskClientSplit(cfg, task, dep.local_data)
    everyone = np.arange(dep.num_clients, dtype=np.intp)
    setup = FedEvalSetup(split.held_out, everyone)
    return dataclasses.replace(dep, local_data=split.train, fed_eval=setup)


def center_desk(dep: Deployment, center: Center, rounds: int | None = None) -> EvalDesk | None:
    """The center's desk: the cadence and sample of the simulator (None: off).
    ``rounds``: the run's rounds (default ``rounds.rounds``; FedBuff: its server steps)."""
    setup = dep.fed_eval
    if setup is None:
        return None
    cfg = dep.config
    steps = cfg.rounds.rounds if rounds is None else rounds
    plan = EvalPlan(fed_eval_settings(cfg, setup.eligible), setup.eligible, steps)
    return EvalDesk(center, plan, cfg.rounds.deadline_s)


def tier_desk(dep: Deployment, center: Center) -> EvalDesk | None:
    """An aggregator tier's desk, which relays its parent's evaluations (None: off)."""
    if dep.fed_eval is None:
        return None
    return EvalDesk(center, None, dep.config.rounds.deadline_s)
