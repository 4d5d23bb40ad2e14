"""The Prometheus exporter sink: values, labels, its own registry, the HTTP endpoint."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedstrata.core.metrics import PrivacySpent, ResilienceStats, TierStats
from fedstrata.errors import ConfigError, TransportError
from fedstrata.monitoring import Alert, ClientFailure, RoundMetrics
from fedstrata.monitoring.catalogue import METRICS
from fedstrata.monitoring.live import alert_rows
from fedstrata.monitoring.prometheus import PrometheusExporter

MakeMetrics = Callable[..., RoundMetrics]

LABELS = {"run": "demo", "tier": "center", "node": "0"}


def _value(exporter: PrometheusExporter, name: str, **extra: str) -> float | None:
    return exporter.registry.get_sample_value(name, {**LABELS, **extra})


def test_rounds_become_gauges_counters_and_histograms(make_metrics: MakeMetrics) -> None:
    privacy = PrivacySpent(epsilon_spent=1.5, epsilon_remaining=2.5, noise_multiplier=1.0,
                           sampling_rate=0.1)  # fmt: skip
    rounds = [make_metrics(0), make_metrics(1, privacy=privacy)]
    exporter = PrometheusExporter("demo", total_rounds=4)
    for m in rounds:
        exporter.emit(m)
    last = alert_rows(rounds, total_rounds=4)[-1]
    assert _value(exporter, "fedstrata_rounds_total") == 2
    assert _value(exporter, "fedstrata_round") == 1
    assert _value(exporter, "fedstrata_bytes_up_total") == 1000 + 2000
    assert _value(exporter, "fedstrata_clients_total", outcome="completed") == 16
    assert _value(exporter, "fedstrata_round_seconds_count") == 2
    assert _value(exporter, "fedstrata_round_seconds_sum") == 20.0
    assert _value(exporter, "fedstrata_sync_seconds_sum") == 2 * (1.5 + 2.0)
    assert _value(exporter, "fedstrata_round_seconds_bucket", le="10.0") == 2
    assert _value(exporter, "fedstrata_round_seconds_bucket", le="5.0") == 0
    assert _value(exporter, "fedstrata_accuracy") == rounds[1].accuracy
    assert _value(exporter, "fedstrata_completion_rate") == 0.8
    assert _value(exporter, "fedstrata_sync_share") == pytest.approx(3.5 / 10.0)
    # eps 1.5 of a 4.0 budget after 2 of 4 rounds: the plan allows 2.0
    assert _value(exporter, "fedstrata_privacy_plan_ratio") == pytest.approx(0.75)
    for d in METRICS:  # every applicable metric is exported with the catalogue's value
        want = last[d.key]
        assert _value(exporter, f"fedstrata_{d.key}") == (None if want is None else want)


def test_failures_alerts_and_tiers_are_counted(make_metrics: MakeMetrics) -> None:
    exporter = PrometheusExporter("demo")
    exporter.emit(ClientFailure(0, 3, "dropout"))
    exporter.emit(ClientFailure(0, 4, "dropout"))
    exporter.emit(Alert("SyncShareHigh", 0, 0.9, "warning", "msg"))
    tiers = TierStats(center_ingress_bytes=10, region_ingress_bytes=0, edge_ingress_bytes=40,
                      edge_rounds=2, client_updates=8)  # fmt: skip
    exporter.emit(make_metrics(0, tiers=tiers))
    assert _value(exporter, "fedstrata_client_failures_total") == 2
    alert = {"alert": "SyncShareHigh", "severity": "warning"}
    assert _value(exporter, "fedstrata_alerts_total", **alert) == 1
    assert _value(exporter, "fedstrata_ingress_bytes_total", level="edge") == 40


def test_round_details_export_nodes_and_stragglers(make_metrics: MakeMetrics) -> None:
    from fedstrata.monitoring import DeviceRound, NodeRound, RoundDetail

    dev = [DeviceRound(c, "accepted", 0.1, 1.0, 0.2, c == 2, 0.5) for c in range(3)]
    nodes = (NodeRound("edge-1", "edge", 300, 2, 1.5), NodeRound("center", "center", 90, 3, 2.0))
    exporter = PrometheusExporter("demo")
    exporter.emit(RoundDetail(0, tuple(dev), nodes))
    exporter.emit(RoundDetail(1, (), nodes[:1]))
    edge = {"run": "demo", "tier": "edge", "node": "edge-1"}
    value = exporter.registry.get_sample_value
    assert value("fedstrata_node_ingress_bytes_total", edge) == 600
    assert value("fedstrata_node_seconds", {**edge}) == 1.5
    assert value("fedstrata_node_ingress_bytes_total", {**edge, "tier": "center",
                 "node": "center"}) == 90  # fmt: skip
    assert _value(exporter, "fedstrata_stragglers") == 1


def test_resilience_records_export_checkpoint_times_and_failovers(
    make_metrics: MakeMetrics,
) -> None:
    """Issue 15 part 6: save times by tier, the center's failovers and recovery."""
    exporter = PrometheusExporter("demo", total_rounds=4)
    first = ResilienceStats(ckpt_memory_s=0.001, ckpt_object_s=0.2, ckpt_critical_s=0.25,
                            failovers=0)  # fmt: skip
    second = ResilienceStats(ckpt_memory_s=0.002, ckpt_critical_s=0.3, failovers=1,
                             recovery_s=1.7, restore_s=0.05)  # fmt: skip
    exporter.emit(make_metrics(0).with_stats(first))
    assert _value(exporter, "fedstrata_center_recovery_seconds") is None
    exporter.emit(make_metrics(1).with_stats(second))
    assert _value(exporter, "fedstrata_checkpoint_seconds_count", kind="memory") == 2
    assert _value(exporter, "fedstrata_checkpoint_seconds_sum", kind="memory") == pytest.approx(
        0.003
    )
    assert _value(exporter, "fedstrata_checkpoint_seconds_count", kind="object") == 1
    assert _value(exporter, "fedstrata_checkpoint_seconds_count", kind="disk") is None
    assert _value(exporter, "fedstrata_checkpoint_seconds_count", kind="critical") == 2
    assert _value(exporter, "fedstrata_center_failovers") == 1
    assert _value(exporter, "fedstrata_center_recovery_seconds") == 1.7


def test_each_exporter_has_its_own_registry(make_metrics: MakeMetrics) -> None:
    a, b = PrometheusExporter("demo"), PrometheusExporter("demo")
    a.emit(make_metrics(0))
    assert _value(a, "fedstrata_rounds_total") == 1
    assert _value(b, "fedstrata_rounds_total") is None  # nothing leaked from a


def test_serves_metrics_over_http_and_stops(make_metrics: MakeMetrics) -> None:
    with PrometheusExporter("demo", tier="edge", node="3") as exporter:
        port = exporter.serve(0)
        exporter.emit(make_metrics(0))
        with pytest.raises(ConfigError, match="already serves"):
            exporter.serve(0)
        with urllib.request.urlopen(exporter.url, timeout=5) as response:
            text = response.read().decode()
        with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
            PrometheusExporter("other").serve(port)
    samples = {
        s.name: s for family in text_string_to_metric_families(text) for s in family.samples
    }
    rounds = samples["fedstrata_rounds_total"]
    assert rounds.value == 1
    assert rounds.labels == {"run": "demo", "tier": "edge", "node": "3"}
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    exporter.close()  # idempotent


def test_empty_labels_are_refused() -> None:
    with pytest.raises(ConfigError, match="node=''"):
        PrometheusExporter("demo", node="")
