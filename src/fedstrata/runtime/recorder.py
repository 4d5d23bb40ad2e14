"""The center's run directory: the simulator's layout, written as rounds complete.

:class:`RunRecorder` feeds the monitoring run store (:class:`~fedstrata.monitoring.RunStore`,
the same writer as :func:`fedstrata.api.run`): ``config.yaml`` when the run starts; after
every round its client failures and metrics (``metrics.sqlite``; the codec figures
and the events are the simulator's, :mod:`fedstrata.coordinator.round_logic`) and the
model it produced (``model.npz``); at the end ``summary.json`` and ``report.html``. Times are
real seconds (the runtime has no simulated clock): ``sim_round_s`` is the round's wall
time. The center evaluates on its test set (if any) every ``rounds.eval_every`` rounds
and after the last; a round's federated evaluation (``evaluation.every``,
:mod:`fedstrata.runtime.fedeval`) is emitted before its metrics, as the simulator does.

Ownership: the recorder owns its store; :meth:`RunRecorder.finish` or
:meth:`RunRecorder.abort` (an interrupted run) closes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedstrata.config import dump_config
from fedstrata.coordinator.cadence import evaluate_round
from fedstrata.coordinator.round_metrics import (
    ClientCounts,
    RoundFigures,
    emit_round,
    round_metrics,
)
from fedstrata.coordinator.system_tally import outcome_devices
from fedstrata.core.metrics import AnyStats
from fedstrata.core.params import FloatVector
from fedstrata.monitoring import (
    RoundMetrics,
    RunStarted,
    RunStatus,
    RunStore,
    RunTotals,
    Sink,
    new_run_dir,
    write_report,
)
from fedstrata.monitoring.devices import RoundDetail
from fedstrata.runtime.records import RoundRecord

if TYPE_CHECKING:
    from fedstrata.runtime.build import Deployment  # build imports the tiers, which import us

__all__ = ["RunRecorder"]

log = logging.getLogger(__name__)


class RunRecorder:
    """Writes one center run's directory; see the module docstring.

    Args:
        dep: the deployment (configuration, trainer, test set).
        store: the created run store (``RunStarted`` already emitted).
        clock: wall-clock seconds (tests inject a fake).
    """

    def __init__(
        self, dep: Deployment, store: RunStore, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.dep, self.store, self.clock = dep, store, clock
        self.sinks: tuple[Sink, ...] = (store,)  # the store first (monitoring may add more)
        self.totals = RunTotals()
        self._test = None if dep.test_data is None else dep.test_data()
        self._started = self._last = clock()

    @classmethod
    def create(cls, dep: Deployment, run_name: str | None = None) -> RunRecorder | None:
        """A recorder in a fresh run directory under ``output.dir`` (None: disabled).

        Raises:
            ConfigError: the run name is not a safe file name.
            CheckpointError: the directory cannot be created.
        """
        cfg = dep.config
        if not cfg.output.run_store:
            return None
        store = RunStore.create(new_run_dir(cfg.output.dir, run_name or cfg.name))
        store.emit(RunStarted(store.path.name, dump_config(cfg), dep.num_clients, dep.size))
        log.warning("center: run directory %s", store.path)
        return cls(dep, store)

    @property
    def path(self) -> Path:
        """The run directory."""
        return self.store.path

    def on_round(
        self, round_idx: int, record: RoundRecord, params: FloatVector, *extra: AnyStats
    ) -> None:
        """Record a finished round and the model it produced (``extra``: records the
        round's driver adds, e.g. a center node's checkpoint and failover figures)."""
        now = self.clock()
        metrics = self._metrics(round_idx, record, params, now - self._last, now)
        metrics = metrics.with_stats(*extra)
        self._last = now
        self.totals.add(metrics)
        detail = RoundDetail(round_idx, outcome_devices(record.outcome))
        evaluated = () if record.fed_eval is None else (record.fed_eval,)
        for event in (*record.fed_eval_failures, *evaluated):  # as the simulator's order
            for sink in self.sinks:
                sink.emit(event)
        emit_round(record.outcome, metrics, self.sinks, None, detail=detail)
        self.store.save_model(self.dep.trainer.spec, params)

    def _metrics(
        self, round_idx: int, record: RoundRecord, params: FloatVector, round_s: float, now: float
    ) -> RoundMetrics:
        rounds = self.dep.config.rounds
        ev = evaluate_round(
            self.dep.trainer, self._test, params, round_idx,
            rounds=rounds.rounds, eval_every=rounds.eval_every,
        )  # fmt: skip
        figures = RoundFigures(
            record.train_loss, record.bytes_up, record.bytes_down, round_s,
            max(round_s, now - self._started), round_s,
        )  # fmt: skip
        counts = ClientCounts.of(record.outcome)
        metrics = round_metrics(
            round_idx, counts, ev, figures, record.codec, record.precision, record.system
        )
        return metrics.with_stats(record.privacy, record.schedule)  # the simulator's fields

    def finish(self, params: FloatVector, stopped_reason: str | None = None) -> Path:
        """Save the final model, the summary and the report; close the store. A run that
        stopped early (``stopped_reason``: the privacy budget) is recorded as stopped."""
        self.store.save_model(self.dep.trainer.spec, params)
        wall_s = self.clock() - self._started
        status = RunStatus.STOPPED if stopped_reason else RunStatus.COMPLETED
        summary = self.totals.finish(
            self.path.name, status, wall_s, stop_reason=stopped_reason or ""
        )
        self.store.emit(summary)
        self.store.close()
        if self.dep.config.output.report:
            write_report(self.path)
        return self.path

    def abort(self) -> None:
        """Close the store of an interrupted run (it records the run as such)."""
        self.store.close()
