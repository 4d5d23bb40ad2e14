"""Monitoring of the runtime's processes: the center's sinks and an aggregator tier's.

The center's rounds reach the sinks through its :class:`~fedstrata.runtime.recorder.RunRecorder`
(the run store first, then what ``config.monitoring`` opened:
:class:`~fedstrata.monitoring.wiring.MonitoringSinks`). An aggregator tier has no run
store: :class:`TierMonitor` turns each of its rounds (a
:class:`~fedstrata.runtime.records.RoundRecord`) into the events a sink takes, so the
tier's own Prometheus exporter shows its rounds, bytes and clients (labels ``tier`` =
``edge``, ``node`` = its participant id). Times are real seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fedstrata.config import FedConfig
from fedstrata.coordinator.cadence import Evaluation
from fedstrata.coordinator.round_metrics import (
    ClientCounts,
    RoundFigures,
    emit_round,
    round_metrics,
)
from fedstrata.errors import ConfigError
from fedstrata.monitoring.wiring import MonitoringSinks
from fedstrata.runtime.recorder import RunRecorder
from fedstrata.runtime.records import RoundRecord

__all__ = ["TierMonitor", "center_monitoring", "tier_monitoring"]


def center_monitoring(config: FedConfig, recorder: RunRecorder | None) -> MonitoringSinks:
    """The center's sinks, given to ``recorder``: its run store first, then what
    ``config.monitoring`` asks for (labelled with the run directory's name).

    Raises:
        ConfigError: an exporter or tracker is asked for without a run store
            (``output.run_store: false``): the center's round metrics come from it.
        MissingDependencyError: a tracker's package is missing.
        TransportError: the exporter's port cannot be bound.
    """
    m = config.monitoring
    keys = ("metrics_port", "tensorboard_dir", "mlflow_uri")
    wanted = [k for k in keys if getattr(m, k) is not None]
    if recorder is None:
        if wanted:
            raise ConfigError(
                f"monitoring.{wanted[0]} on the runtime center needs output.run_store: true "
                "(its round metrics are the run directory's)"
            )
        return MonitoringSinks([], [])
    run = recorder.path.name
    sinks = MonitoringSinks.open(
        m, run=run, store=recorder.store, total_rounds=config.rounds.rounds
    )
    recorder.sinks = sinks.sinks
    return sinks


def tier_monitoring(config: FedConfig, tier_id: int) -> TierMonitor | None:
    """An aggregator tier's monitor (its exporter), or None when none is configured.

    Only the exporter applies to a tier (alerts, TensorBoard and MLflow watch the
    center's rounds).

    Raises:
        TransportError: the exporter's port cannot be bound.
    """
    m = config.monitoring
    if m.metrics_port is None:
        return None
    only_exporter = m.model_copy(
        update={"alerts": (), "tensorboard_dir": None, "mlflow_uri": None}
    )
    sinks = MonitoringSinks.open(only_exporter, run=config.name, tier="edge", node=str(tier_id))
    return TierMonitor(sinks)


class TierMonitor:
    """Sends a tier's rounds to its sinks; owns them (:meth:`close`).

    Args:
        sinks: the tier's sinks.
        clock: seconds (tests inject a fake).
    """

    def __init__(
        self, sinks: MonitoringSinks, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sinks, self.clock = sinks, clock
        self._started = self._round_start = clock()

    def round_started(self) -> None:
        """Mark the start of a round."""
        self._round_start = self.clock()

    def round_done(self, round_idx: int, record: RoundRecord) -> None:
        """Emit the round's client failures and metrics."""
        now = self.clock()
        round_s = max(0.0, now - self._round_start)
        figures = RoundFigures(
            record.train_loss, record.bytes_up, record.bytes_down, round_s,
            max(round_s, now - self._started), round_s,
        )  # fmt: skip
        counts = ClientCounts.of(record.outcome)
        metrics = round_metrics(round_idx, counts, Evaluation(), figures, record.codec)
        emit_round(record.outcome, metrics, self.sinks.sinks, None)

    def close(self) -> None:
        """Stop the exporter."""
        self.sinks.close()
