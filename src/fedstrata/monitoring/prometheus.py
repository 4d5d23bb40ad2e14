"""A Prometheus exporter as a metrics sink (Issue 16 part 2).

:class:`PrometheusExporter` turns the metric events of a run into Prometheus metrics in
a registry of its own (no global state), and :meth:`PrometheusExporter.serve` serves
them over HTTP (``/metrics``) until :meth:`PrometheusExporter.close`. The simulator, the
runtime's center and each aggregator tier run one; every series carries the labels
``run`` (the run's name), ``tier`` (``center``, ``edge``, ...) and ``node`` (the
process's id in its tier).

======================================  ===========  ===========================================
name                                    type         value
======================================  ===========  ===========================================
``fedstrata_round_seconds``             histogram    a round's duration (``sim_round_s``)
``fedstrata_sync_seconds``              histogram    its download + upload time (critical path)
``fedstrata_<metric>``                  gauge        the twelve federation metrics
                                                     (:data:`~fedstrata.monitoring.catalogue.METRICS`)
                                                     and ``accuracy``, ``loss``, ``train_loss``,
                                                     ``privacy_plan_ratio``: the last measured
                                                     value (a metric that does not apply, or is
                                                     not measured yet, has no series)
``fedstrata_round``                     gauge        the last finished round
``fedstrata_rounds_total``              counter      rounds finished
``fedstrata_bytes_up_total`` / ``_down``  counter    bytes from / to clients
``fedstrata_clients_total``             counter      clients by ``outcome`` (selected,
                                                     completed, failed, late)
``fedstrata_client_failures_total``     counter      client failures reported
``fedstrata_ingress_bytes_total``       counter      bytes into each ``level`` of a tree
``fedstrata_node_ingress_bytes_total``  counter      bytes into each aggregating node of a
                                                     tree (``tier`` and ``node``: that node's)
``fedstrata_node_seconds``              gauge        a node's last input, from the round's start
``fedstrata_stragglers``                gauge        stragglers of the last round (per-device
                                                     series are not exported: 10,000 devices
                                                     would be 10,000 series; the dashboard
                                                     shows them)
``fedstrata_alerts_total``              counter      alert firings by ``alert`` and ``severity``
``fedstrata_checkpoint_seconds``        histogram    checkpoint save times by ``kind``: a tier
                                                     (``memory``, ``disk``, ``object``) or
                                                     ``critical`` (the round's path / commit)
``fedstrata_center_failovers``          gauge        center takeovers in the run so far
``fedstrata_center_recovery_seconds``   gauge        the last takeover's recovery time
======================================  ===========  ===========================================

The shipped alert rules (:func:`~fedstrata.monitoring.alerts.prometheus_rules_yaml`)
are written over these gauges.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fedstrata.core.metrics import ResilienceStats
from fedstrata.errors import ConfigError, TransportError
from fedstrata.monitoring.alerts import EXTRA_KEYS, METRIC_KEYS, Alert
from fedstrata.monitoring.devices import RoundDetail
from fedstrata.monitoring.events import ClientFailure, MetricEvent, RoundMetrics
from fedstrata.monitoring.live import LiveRows

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = ["CHECKPOINT_BUCKETS_S", "ROUND_BUCKETS_S", "PrometheusExporter"]

logger = logging.getLogger(__name__)

ROUND_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Histogram buckets (seconds) of round and sync times: sub-second simulated rounds to
half-hour cross-device rounds."""
CHECKPOINT_BUCKETS_S = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 300.0)
"""Histogram buckets (seconds) of checkpoint saves: a memory snapshot to an object store."""
_LABELS = ("run", "tier", "node")
_OUTCOMES = ("selected", "completed", "failed", "late")


class PrometheusExporter:
    """A sink exporting a run's metrics to Prometheus; see the module docstring.

    Args:
        run: the run's name (label ``run``).
        tier: this process's tier (label ``tier``): ``center``, ``region``, ``edge``.
        node: its id in that tier (label ``node``).
        total_rounds: the configured rounds (for ``privacy_plan_ratio``), or None.
        rows: the rows to share with other sinks (default: its own, of ``total_rounds``).
        registry: where the metrics live (default: a new registry of its own).

    Raises:
        ConfigError: an empty label value.
    """

    def __init__(
        self,
        run: str,
        *,
        tier: str = "center",
        node: str = "0",
        total_rounds: int | None = None,
        rows: LiveRows | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        for name, value in (("run", run), ("tier", tier), ("node", node)):
            if not value:
                raise ConfigError(f"PrometheusExporter: label {name}={value!r} must not be empty")
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.labels = (run, tier, node)
        self._rows = rows if rows is not None else LiveRows(total_rounds)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._children: dict[int, Any] = {}  # this exporter's labelled series, made on first use
        self._define()

    def _define(self) -> None:
        reg, lab = self.registry, _LABELS
        buckets = ROUND_BUCKETS_S
        what = "Round duration (simulated time in the simulator)"
        self.round_seconds = Histogram("fedstrata_round_seconds", what, lab, registry=reg,
                                       buckets=buckets)  # fmt: skip
        what = "Download + upload time of the round's critical path"
        self.sync_seconds = Histogram("fedstrata_sync_seconds", what, lab, registry=reg,
                                      buckets=buckets)  # fmt: skip
        self.gauges = {
            key: Gauge(
                f"fedstrata_{key}", f"Federation metric {key} of the last round", lab, registry=reg
            )
            for key in (*METRIC_KEYS, *EXTRA_KEYS)
        }
        self.round = Gauge(
            "fedstrata_round", "Index of the last finished round", lab, registry=reg
        )
        self.rounds = Counter("fedstrata_rounds", "Rounds finished", lab, registry=reg)
        self.bytes_up = Counter("fedstrata_bytes_up", "Bytes sent by clients", lab, registry=reg)
        self.bytes_down = Counter(
            "fedstrata_bytes_down", "Bytes sent to clients", lab, registry=reg
        )
        self.clients = Counter("fedstrata_clients", "Clients by outcome", (*lab, "outcome"),
                               registry=reg)  # fmt: skip
        self.failures = Counter("fedstrata_client_failures", "Client failures reported", lab,
                                registry=reg)  # fmt: skip
        self.ingress = Counter("fedstrata_ingress_bytes", "Bytes into each level of a tree",
                               (*lab, "level"), registry=reg)  # fmt: skip
        self.node_ingress = Counter("fedstrata_node_ingress_bytes", "Bytes into an aggregating "
                                    "node", lab, registry=reg)  # fmt: skip
        self.node_seconds = Gauge("fedstrata_node_seconds", "Seconds from the round's start to "
                                  "a node's last input", lab, registry=reg)  # fmt: skip
        self.stragglers = Gauge("fedstrata_stragglers", "Stragglers of the last round", lab,
                                registry=reg)  # fmt: skip
        self.alerts = Counter("fedstrata_alerts", "Alert firings", (*lab, "alert", "severity"),
                              registry=reg)  # fmt: skip
        self.checkpoint = Histogram("fedstrata_checkpoint_seconds", "Checkpoint save time by "
                                    "tier, or on the round's path", (*lab, "kind"), registry=reg,
                                    buckets=CHECKPOINT_BUCKETS_S)  # fmt: skip
        self.failovers = Gauge("fedstrata_center_failovers", "Center takeovers in the run so far",
                               lab, registry=reg)  # fmt: skip
        self.recovery = Gauge("fedstrata_center_recovery_seconds", "Recovery time of the last "
                              "center takeover", lab, registry=reg)  # fmt: skip

    # --- the sink ---------------------------------------------------------------------

    def emit(self, event: MetricEvent) -> None:
        """Update the metrics from ``event`` (rounds, their details, failures, alerts)."""
        if isinstance(event, RoundMetrics):
            self._on_round(event)
        elif isinstance(event, ClientFailure):
            self._mine(self.failures).inc()
        elif isinstance(event, Alert):
            self.alerts.labels(*self.labels, event.rule, event.severity).inc()
        elif isinstance(event, RoundDetail):
            self._on_detail(event)

    def _on_detail(self, detail: RoundDetail) -> None:
        run = self.labels[0]
        for n in detail.nodes:
            self.node_ingress.labels(run, n.tier, n.node).inc(n.ingress_bytes)
            self.node_seconds.labels(run, n.tier, n.node).set(n.seconds)
        if detail.devices:
            self._mine(self.stragglers).set(sum(d.straggler for d in detail.devices))

    def _mine(self, metric: Any) -> Any:
        """``metric``'s series with this exporter's labels (cached: ``labels()`` locks)."""
        child = self._children.get(id(metric))
        if child is None:
            child = self._children[id(metric)] = metric.labels(*self.labels)
        return child

    def _on_round(self, m: RoundMetrics) -> None:
        lab, mine = self.labels, self._mine
        mine(self.round_seconds).observe(m.sim_round_s)
        mine(self.sync_seconds).observe(m.downlink_s + m.uplink_s)
        for key, value in self._rows.add(m).items():
            gauge = self.gauges.get(key)
            if gauge is not None and value is not None:
                mine(gauge).set(value)
        mine(self.round).set(m.round_idx)
        mine(self.rounds).inc()
        mine(self.bytes_up).inc(m.bytes_up)
        mine(self.bytes_down).inc(m.bytes_down)
        counts = (m.clients_selected, m.clients_completed, m.clients_failed, m.clients_late)
        for outcome, count in zip(_OUTCOMES, counts, strict=True):
            self.clients.labels(*lab, outcome).inc(count)
        if m.tiers is not None:
            t = m.tiers
            sizes = (t.center_ingress_bytes, t.region_ingress_bytes, t.edge_ingress_bytes)
            for level, size in zip(("center", "region", "edge"), sizes, strict=True):
                self.ingress.labels(*lab, level).inc(size)
        if m.resilience is not None:
            self._on_resilience(m.resilience)

    def _on_resilience(self, r: ResilienceStats) -> None:
        saves = (r.ckpt_memory_s, r.ckpt_disk_s, r.ckpt_object_s, r.ckpt_critical_s)
        for kind, seconds in zip(("memory", "disk", "object", "critical"), saves, strict=True):
            if seconds is not None:
                self.checkpoint.labels(*self.labels, kind).observe(seconds)
        if r.failovers is not None:
            self._mine(self.failovers).set(r.failovers)
        if r.recovery_s is not None:
            self._mine(self.recovery).set(r.recovery_s)

    # --- the HTTP endpoint ------------------------------------------------------------

    def serve(self, port: int = 0, address: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``address:port`` (0: a free port) in a daemon thread
        until :meth:`close`; returns the port.

        Raises:
            ConfigError: already serving.
            TransportError: the port cannot be bound.
        """
        from prometheus_client import start_http_server

        if self._server is not None:
            raise ConfigError(f"PrometheusExporter already serves on port {self.port}")
        try:
            self._server, self._thread = start_http_server(port, address, self.registry)
        except OSError as exc:
            raise TransportError(
                f"Prometheus exporter cannot listen on {address}:{port}: {exc}"
            ) from exc
        logger.info("Prometheus metrics of run %s at %s", self.labels[0], self.url)
        return self.port

    @property
    def port(self) -> int:
        """The port served on.

        Raises:
            ConfigError: not serving.
        """
        if self._server is None:
            raise ConfigError("PrometheusExporter is not serving (call serve first)")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """The URL of ``/metrics``."""
        host = str(self._server.server_address[0]) if self._server is not None else "?"
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (joins the server thread). Idempotent; the metrics stay readable."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def __enter__(self) -> PrometheusExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        run, tier, node = self.labels
        return f"PrometheusExporter(run={run!r}, tier={tier!r}, node={node!r})"
