"""Open the sinks a run's ``monitoring`` settings ask for (simulator and runtime alike).

:meth:`MonitoringSinks.open` builds, in emission order: the run store (if any), the
Prometheus exporter (served on ``metrics_port``), the TensorBoard and MLflow sinks, the
caller's own sinks, and last the :class:`~fedstrata.monitoring.live.AlertMonitor`, which
forwards each alert to the store and the exporters. All but the store sit behind a
:class:`~fedstrata.monitoring.sinks.Fanout`, so a failing exporter or tracker is logged
and never stops a run. Drivers send every event to :attr:`MonitoringSinks.sinks`.

Ownership: :class:`MonitoringSinks` owns what it opened (exporter, trackers) and
closes them in :meth:`~MonitoringSinks.close`; the run store and the caller's sinks
stay their owners' to close.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fedstrata.monitoring.events import MetricEvent
from fedstrata.monitoring.exports import MLflowSink
from fedstrata.monitoring.live import AlertMonitor, LiveRows
from fedstrata.monitoring.settings import MonitoringConfig
from fedstrata.monitoring.sinks import Fanout, Sink

__all__ = ["MonitoringSinks"]

logger = logging.getLogger(__name__)


class MonitoringSinks:
    """The sinks of one run (see the module docstring); a context manager."""

    def __init__(self, sinks: Sequence[Sink], owned: Sequence[Sink]) -> None:
        self.sinks: tuple[Sink, ...] = tuple(sinks)
        self._owned = list(owned)
        self.exporter_url: str | None = None

    @classmethod
    def open(
        cls,
        cfg: MonitoringConfig,
        *,
        run: str,
        store: Sink | None = None,
        total_rounds: int | None = None,
        tier: str = "center",
        node: str = "0",
        extra: Sequence[Sink] = (),
    ) -> MonitoringSinks:
        """Open the sinks ``cfg`` asks for (see the module docstring).

        Args:
            cfg: the ``monitoring`` section.
            run: the run's name (exporter label, MLflow run name).
            store: the run store, first to receive every event (None: no store).
            total_rounds: the configured rounds (ε plan of the alert rules).
            tier: this process's tier (exporter label).
            node: its id in the tier (exporter label).
            extra: the caller's own sinks (they receive alerts too).

        Raises:
            MissingDependencyError: a tracker's package is not installed.
            TransportError: the exporter's port cannot be bound.
        """
        owned: list[Sink] = []
        rows = LiveRows(total_rounds)  # one row per round, shared by the sinks
        try:
            exporter_url = cls._exporters(cfg, run, rows, (tier, node), owned)
        except BaseException:
            cls._close_all(owned)
            raise
        front = ([] if store is None else [store]) + [*owned, *extra]
        isolated: list[Sink] = [*owned, *extra]
        if cfg.alerts:
            isolated.append(AlertMonitor(cfg.alerts, front, rows=rows))
        sinks: list[Sink] = [] if store is None else [store]
        if isolated:  # a failing exporter or tracker is logged and never stops the run
            sinks.append(Fanout(isolated))
        result = cls(sinks, owned)
        result.exporter_url = exporter_url
        return result

    @staticmethod
    def _exporters(
        cfg: MonitoringConfig,
        run: str,
        rows: LiveRows,
        where: tuple[str, str],
        owned: list[Sink],
    ) -> str | None:
        """Open the configured exporter and trackers into ``owned`` (so a failure part
        way closes what opened); returns the exporter's ``/metrics`` URL (None: off)."""
        tier, node = where
        url = None
        if cfg.metrics_port is not None:
            # deferred: prometheus-client and its HTTP server load only when exporting
            from fedstrata.monitoring.prometheus import PrometheusExporter

            exporter = PrometheusExporter(run, tier=tier, node=node, rows=rows)
            owned.append(exporter)
            exporter.serve(cfg.metrics_port, cfg.metrics_address)
            url = exporter.url
            logger.warning("%s %s: Prometheus metrics at %s", tier, node, url)
        if cfg.tensorboard_dir is not None:
            from fedstrata.monitoring.exports import TensorBoardSink

            owned.append(TensorBoardSink(cfg.tensorboard_dir / run, rows=rows))
        if cfg.mlflow_uri is not None:
            owned.append(MLflowSink(cfg.mlflow_uri, run, rows=rows))
        return url

    def emit_owned(self, event: MetricEvent) -> None:
        """Send ``event`` to the sinks opened here only (e.g. a RunStarted or RunFinished
        the driver gave the store itself)."""
        for sink in self._owned:
            sink.emit(event)

    def close(self) -> None:
        """Close what was opened here (failures are logged). Idempotent."""
        owned, self._owned = self._owned, []
        self._close_all(owned)

    @staticmethod
    def _close_all(sinks: Sequence[Sink]) -> None:
        for sink in sinks:
            try:
                sink.close()
            except Exception:
                logger.warning("monitoring sink %r failed to close", sink, exc_info=True)

    def __enter__(self) -> MonitoringSinks:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:  # the run did not finish: trackers record it as killed
            for sink in self._owned:
                if isinstance(sink, MLflowSink):
                    sink.status = "KILLED"
        self.close()
