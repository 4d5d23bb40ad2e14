"""Federated evaluation's rules, shared by the simulator and the runtime (Issue 14 part 3).

Every ``evaluation.every`` rounds (and after the last) a seeded sample of the clients
that hold evaluation data evaluates the round's final global model on its own
held-out data. One rule each, called by both drivers (:mod:`fedstrata.sim.fedeval`,
:mod:`fedstrata.runtime.fedeval`):

* :class:`FedEvalSettings` / :func:`evaluation_sample`: when, and who (the sample of
  round ``r`` is drawn from the run's seed and ``r`` alone, so a deployment asks the
  same clients as the simulation);
* :func:`client_evaluation`: what a client computes and reports (the task's named
  metrics, else ``loss`` and ``accuracy``, and the examples evaluated);
* :func:`fed_eval_event`: the round's :class:`~fedstrata.monitoring.FedEvalMetrics`
  (the statistics of :mod:`fedstrata.monitoring.fedeval`), each failed client emitted
  as a :class:`~fedstrata.monitoring.ClientFailure` prefixed ``federated evaluation:``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedstrata.coordinator.cadence import evaluation_due
from fedstrata.core.context import derive_rng
from fedstrata.core.params import FloatVector
from fedstrata.core.training import LocalData, Trainer
from fedstrata.errors import ConfigError, DataError
from fedstrata.monitoring import ClientEval, ClientFailure, FedEvalMetrics, Sink

__all__ = [
    "FAILURE_PREFIX",
    "FedEvalSettings",
    "client_evaluation",
    "evaluation_sample",
    "fed_eval_event",
]

log = logging.getLogger(__name__)

FAILURE_PREFIX = "federated evaluation: "


@dataclass(frozen=True)
class FedEvalSettings:
    """When and how many clients evaluate.

    Attributes:
        every: evaluate after every ``every``-th round (and after the last).
        sample_size: clients evaluated each time (a seeded sample of the eligible).
        root_seed: the run's seed (the sample of round ``r`` is drawn from it).
    """

    every: int
    sample_size: int
    root_seed: int = 0

    def __post_init__(self) -> None:
        if self.every < 1 or self.sample_size < 1:
            raise ConfigError(
                f"FedEvalSettings: every and sample_size must be >= 1, got "
                f"{self.every} and {self.sample_size}"
            )

    def due(self, round_idx: int, last: bool) -> bool:
        """Whether the model after round ``round_idx`` is evaluated."""
        return evaluation_due(round_idx, self.every, last=last)


def evaluation_sample(
    settings: FedEvalSettings, eligible: NDArray[np.intp], round_idx: int
) -> NDArray[np.intp]:
    """The clients that evaluate the model of round ``round_idx``, sorted.

    ``eligible`` must be sorted (the clients holding evaluation data). All of them when
    the sample size covers them, else a sample without replacement drawn from the
    run's seed and ``round_idx`` (stage ``fed_eval``).
    """
    n = settings.sample_size
    if n >= eligible.size:
        return eligible
    rng = derive_rng(settings.root_seed, round_idx, -1, "fed_eval")
    return np.sort(rng.choice(eligible, n, replace=False))


def client_evaluation(
    trainer: Trainer, params: FloatVector, data: LocalData
) -> tuple[int, dict[str, float]]:
    """One client's evaluation of ``params`` on its held-out ``data``.

    Returns:
        ``(examples evaluated, metrics)``: the task's named metrics (its
        ``evaluate``), else ``loss`` and ``accuracy``.

    Raises:
        DataError: ``data`` holds no example.
    """
    if len(data) == 0:
        raise DataError("the client holds no evaluation examples")
    result = trainer.evaluate(params, data)
    metrics = dict(result.metrics) or {"loss": result.loss, "accuracy": result.accuracy}
    return result.num_examples, metrics


def fed_eval_event(
    round_idx: int,
    selected: int,
    results: Sequence[ClientEval],
    failures: Sequence[tuple[int, str]],
    *,
    wall_s: float,
    sinks: Sequence[Sink] = (),
) -> tuple[FedEvalMetrics, tuple[ClientFailure, ...]]:
    """The round's federated evaluation from its clients' results and failures.

    ``failures`` are ``(client id, reason)``; each becomes a
    :class:`~fedstrata.monitoring.ClientFailure` (reason prefixed
    :data:`FAILURE_PREFIX`), emitted to ``sinks`` and returned with the event (which
    is not emitted here: the driver emits it where its round's events go).
    """
    failed = tuple(
        ClientFailure(round_idx, cid, f"{FAILURE_PREFIX}{why}") for cid, why in failures
    )
    if failed:
        log.warning(
            "round %d: federated evaluation failed on %d of %d clients (e.g. client %d: %s)",
            round_idx, len(failed), selected, failures[0][0], failures[0][1],
        )  # fmt: skip
    for failure in failed:
        for sink in sinks:
            sink.emit(failure)
    return FedEvalMetrics.from_results(round_idx, selected, results, wall_s), failed
