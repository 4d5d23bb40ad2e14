"""Experiment-tracker sinks: TensorBoard and MLflow (Issue 16 part 5; optional extras).

Both write, per round, the twelve federation metrics (tagged by their group,
``communication/sync_share``) and the round's accuracy, loss and training loss
(``quality/accuracy``, ``quality/loss``, ``train/loss``), stepped by round; a metric that
does not apply in a round is not written. Alerts are written too (TensorBoard: a
scalar ``alerts/<rule>`` of the value; MLflow: a tag ``alert.<rule>``).

* :class:`TensorBoardSink` writes an event file into a log directory (``tensorboard
  --logdir DIR``); it needs ``pip install 'fedstrata[tensorboard]'``.
* :class:`MLflowSink` logs one MLflow run to a tracking URI (a server, or
  ``sqlite:///mlflow.db``); it needs ``pip install 'fedstrata[mlflow]'``.

A missing package raises :class:`~fedstrata.errors.MissingDependencyError` naming the extra.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from fedstrata.errors import MissingDependencyError
from fedstrata.monitoring._alert import Alert
from fedstrata.monitoring.catalogue import METRICS
from fedstrata.monitoring.events import MetricEvent, RoundMetrics, RunFinished, RunStarted
from fedstrata.monitoring.live import LiveRows

__all__ = ["MLflowSink", "TensorBoardSink", "round_scalars"]

_TAGS = {d.key: f"{d.group}/{d.key}" for d in METRICS}


def _require(module: str, package: str, extra: str, needed_for: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package, f"fedstrata[{extra}]", needed_for) from exc


def round_scalars(metrics: RoundMetrics, rows: LiveRows) -> dict[str, float]:
    """The round's scalars by tag (what both sinks write); adds the round to ``rows``."""
    row = rows.add(metrics)
    scalars = {_TAGS[k]: v for k, v in row.items() if k in _TAGS and v is not None}
    for tag, value in (("quality/accuracy", metrics.accuracy), ("quality/loss", metrics.loss),
                       ("train/loss", metrics.train_loss)):  # fmt: skip
        if value is not None:
            scalars[tag] = value
    return scalars


class TensorBoardSink:
    """Writes a run's rounds as TensorBoard scalars into ``log_dir`` (see the module docstring).

    Raises:
        MissingDependencyError: tensorboard is not installed.
    """

    def __init__(self, log_dir: Path, total_rounds: int | None = None) -> None:
        writer_mod = _require("tensorboard.summary.writer.event_file_writer", "tensorboard",
                              "tensorboard", "the TensorBoard sink")  # fmt: skip
        self._event_pb2 = _require("tensorboard.compat.proto.event_pb2", "tensorboard",
                                   "tensorboard", "the TensorBoard sink")  # fmt: skip
        self._summary_pb2 = _require("tensorboard.compat.proto.summary_pb2", "tensorboard",
                                     "tensorboard", "the TensorBoard sink")  # fmt: skip
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self._writer: Any = writer_mod.EventFileWriter(str(log_dir))
        self._rows = LiveRows(total_rounds)
        self._closed = False

    def emit(self, event: MetricEvent) -> None:
        """Write a round's scalars (or an alert's value)."""
        if isinstance(event, RoundMetrics):
            self._write(round_scalars(event, self._rows), event.round_idx)
        elif isinstance(event, Alert):
            self._write({f"alerts/{event.rule}": event.value}, event.round)

    def _write(self, scalars: dict[str, float], step: int) -> None:
        summary = self._summary_pb2.Summary(
            value=[
                self._summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in scalars.items()
            ]
        )
        event = self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
        self._writer.add_event(event)

    def close(self) -> None:
        """Flush and close the event file. Idempotent."""
        if not self._closed:
            self._closed = True
            self._writer.close()


class MLflowSink:
    """Logs a run to MLflow: one MLflow run per federation run (see the module docstring).

    Args:
        tracking_uri: the tracking server or store (``sqlite:///mlflow.db``, ``http://...``).
        run_name: the MLflow run's name (the federation run's).
        experiment: the MLflow experiment (created if missing).
        total_rounds: the configured rounds (for ``privacy_plan_ratio``).

    Raises:
        MissingDependencyError: mlflow is not installed.
    """

    def __init__(
        self,
        tracking_uri: str,
        run_name: str,
        *,
        experiment: str = "fedstrata",
        total_rounds: int | None = None,
    ) -> None:
        tracking = _require("mlflow.tracking", "mlflow", "mlflow", "the MLflow sink")
        self._entities = _require("mlflow.entities", "mlflow", "mlflow", "the MLflow sink")
        self.client: Any = tracking.MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        exp_id = (
            found.experiment_id if found is not None else self.client.create_experiment(experiment)
        )
        self.run_id: str = self.client.create_run(exp_id, run_name=run_name).info.run_id
        self._rows = LiveRows(total_rounds)
        self.status = "FINISHED"  # the MLflow run's status at close
        self._closed = False

    def emit(self, event: MetricEvent) -> None:
        """Log a round's metrics, the run's sizes, an alert, or how the run ended."""
        if isinstance(event, RoundMetrics):
            now_ms = int(time.time() * 1000)
            metric = self._entities.Metric
            scalars = round_scalars(event, self._rows)
            batch = [metric(t, v, now_ms, event.round_idx) for t, v in scalars.items()]
            self.client.log_batch(self.run_id, metrics=batch)
        elif isinstance(event, RunStarted):
            params = {"num_clients": event.num_clients, "num_params": event.num_params}
            for key, value in params.items():
                self.client.log_param(self.run_id, key, value)
            self.client.log_text(self.run_id, event.config_yaml, "config.yaml")
        elif isinstance(event, Alert):
            self.client.set_tag(self.run_id, f"alert.{event.rule}", event.message)
        elif isinstance(event, RunFinished):
            failed = event.status.value in {"failed", "interrupted"}
            self.status = "KILLED" if failed else "FINISHED"

    def close(self) -> None:
        """End the MLflow run with :attr:`status` (FINISHED unless the run failed or was
        interrupted). Idempotent."""
        if not self._closed:
            self._closed = True
            self.client.set_terminated(self.run_id, status=self.status)
