"""Federated evaluation in the simulator: clients evaluate the global model on their
own held-out data every N rounds (Issue 14 part 3).

The evaluations run in the executor's workers like training (one
:class:`~fedstrata.sim.tasks.ClientTask` with ``evaluate=True`` per client), in
client order, so the results do not depend on the number of workers. They cost no
simulated time: in a deployment a client evaluates the model it has just received
while (or before) it trains, and a forward pass over a held-out share of its data is
small next to local training; the wall time is recorded (``FedEvalMetrics.wall_s``).
The flat, hierarchical and asynchronous simulations share this code (in the
asynchronous one a "round" is a server step).

A client whose evaluation fails is left out of the statistics, counted in
``clients_failed``, and its reason is emitted as a
:class:`~fedstrata.monitoring.ClientFailure` (prefixed ``federated evaluation:``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedstrata.coordinator.cadence import evaluation_due
from fedstrata.core.context import derive_rng
from fedstrata.core.params import FloatVector
from fedstrata.core.training import LocalPlan
from fedstrata.errors import ConfigError
from fedstrata.monitoring import ClientEval, ClientFailure, FedEvalMetrics, Sink
from fedstrata.sim.executor import Executor
from fedstrata.sim.tasks import ClientTask

__all__ = ["FedEvalSettings", "FederatedEvaluator"]

log = logging.getLogger(__name__)
_NO_PLAN = LocalPlan(steps=1, epochs=None)  # evaluation tasks carry no training plan


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


@dataclass(eq=False)
class FederatedEvaluator:
    """Runs the federated evaluations of one simulation and keeps them in ``history``.

    Args:
        settings: cadence and sample size.
        eligible: ids of the clients that hold evaluation data (sorted).
    """

    settings: FedEvalSettings
    eligible: NDArray[np.intp]
    history: list[FedEvalMetrics] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.eligible = np.sort(np.asarray(self.eligible, dtype=np.intp))
        if self.eligible.size == 0:
            raise ConfigError(
                "federated evaluation: no client holds evaluation data (evaluation.holdout "
                "is too small for the clients' sizes)"
            )

    def sample(self, round_idx: int) -> NDArray[np.intp]:
        """The clients that evaluate the model of round ``round_idx``, sorted."""
        n = self.settings.sample_size
        if n >= self.eligible.size:
            return self.eligible
        rng = derive_rng(self.settings.root_seed, round_idx, -1, "fed_eval")
        return np.sort(rng.choice(self.eligible, n, replace=False))

    def maybe_run(
        self,
        executor: Executor,
        params: FloatVector,
        round_idx: int,
        *,
        last: bool,
        sinks: tuple[Sink, ...] = (),
    ) -> FedEvalMetrics | None:
        """Evaluate ``params`` if round ``round_idx`` is due; emit and keep the result."""
        if not self.settings.due(round_idx, last):
            return None
        event = self.run(executor, params, round_idx, sinks)
        for sink in sinks:
            sink.emit(event)
        self.history.append(event)
        return event

    def run(
        self, executor: Executor, params: FloatVector, round_idx: int, sinks: tuple[Sink, ...]
    ) -> FedEvalMetrics:
        """Evaluate ``params`` on the sampled clients (failures go to ``sinks``)."""
        start = time.perf_counter()
        ids = self.sample(round_idx)
        tasks = [
            ClientTask(i, int(c), round_idx, _NO_PLAN, evaluate=True) for i, c in enumerate(ids)
        ]
        results: list[ClientEval] = []
        failures: list[ClientFailure] = []
        for res in executor.run(params, tasks):
            if res.error is not None:
                reason = f"federated evaluation: {res.error}"
                failures.append(ClientFailure(round_idx, res.client_id, reason))
            else:
                results.append(ClientEval(res.client_id, res.num_examples, dict(res.metrics)))
        if failures:
            log.warning(
                "round %d: federated evaluation failed on %d of %d clients (e.g. client %d: %s)",
                round_idx, len(failures), len(ids), failures[0].client_id,
                failures[0].reason.removeprefix("federated evaluation: "),
            )  # fmt: skip
        for failure in failures:
            for sink in sinks:
                sink.emit(failure)
        wall_s = time.perf_counter() - start
        return FedEvalMetrics.from_results(round_idx, len(ids), results, wall_s)
