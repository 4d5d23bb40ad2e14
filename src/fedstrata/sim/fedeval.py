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
The sample, a client's metrics and the statistics are the shared rules of
:mod:`fedstrata.coordinator.fedeval`, which the runtime's center calls too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedstrata.coordinator.fedeval import FedEvalSettings, evaluation_sample, fed_eval_event
from fedstrata.core.params import FloatVector
from fedstrata.core.training import LocalPlan
from fedstrata.errors import ConfigError
from fedstrata.monitoring import ClientEval, FedEvalMetrics, Sink
from fedstrata.sim.executor import Executor
from fedstrata.sim.tasks import ClientTask

__all__ = ["FedEvalSettings", "FederatedEvaluator"]
_NO_PLAN = LocalPlan(steps=1, epochs=None)  # evaluation tasks carry no training plan


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
        """The clients that evaluate the model of round ``round_idx``, sorted (the
        runtime's center draws the same sample:
        :func:`~fedstrata.coordinator.fedeval.evaluation_sample`)."""
        return evaluation_sample(self.settings, self.eligible, round_idx)

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
        failures: list[tuple[int, str]] = []
        for res in executor.run(params, tasks):
            if res.error is not None:
                failures.append((res.client_id, res.error))
            else:
                results.append(ClientEval(res.client_id, res.num_examples, dict(res.metrics)))
        wall_s = time.perf_counter() - start
        event, _ = fed_eval_event(
            round_idx, len(ids), results, failures, wall_s=wall_s, sinks=sinks
        )
        return event
