"""``config.monitoring`` in a real simulated run: exporter, alerts, TensorBoard, own sinks."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from fedstrata.api import run
from fedstrata.config import FedConfig, load_config
from fedstrata.monitoring import Alert, MemorySink, RoundMetrics, RunStore
from fedstrata.monitoring.live import alert_rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, *extra: str) -> FedConfig:
    return load_config(
        overrides=[
            "data.num_clients=8", "rounds.rounds=4", "rounds.clients_per_round=6",
            "model.kind=logreg", "client.steps=2", "client.epochs=null", "sim.workers=0",
            "devices.dropout_rate=0.5", "output.progress=false", "output.report=false",
            f"output.dir={tmp_path / 'runs'}", *extra,
        ]
    )  # fmt: skip


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "le" not in s.labels and "outcome" not in s.labels
    }


def test_a_run_serves_metrics_fires_alerts_and_writes_tensorboard(tmp_path: Path) -> None:
    port = _free_port()
    cfg = _config(
        tmp_path,
        f"monitoring.metrics_port={port}",
        f"monitoring.tensorboard_dir={tmp_path / 'tb'}",
    )
    url = f"http://127.0.0.1:{port}/metrics"
    scraped: list[dict[str, float]] = []

    def on_round(m: RoundMetrics) -> None:  # the run is live: scrape its exporter
        scraped.append(_scrape(url))

    own = MemorySink()
    result = run(cfg, on_round=on_round, sinks=[own])
    assert result.notes["Prometheus metrics"] == url
    assert [s["fedstrata_rounds_total"] for s in scraped] == [1, 2, 3, 4]
    rounds = result.simulation.rounds
    assert [s["fedstrata_completion_rate"] for s in scraped] == [
        m.clients_completed / m.clients_selected for m in rounds
    ]
    assert scraped[-1]["fedstrata_bytes_up_total"] == sum(m.bytes_up for m in rounds)
    assert scraped[-1]["fedstrata_round_seconds_sum"] == sum(m.sim_round_s for m in rounds)
    # dropouts at 50%: completion stays under 95% and the default rule fires, once
    assert result.run_dir is not None
    with RunStore.open(result.run_dir) as store:
        alerts = store.alerts()
        stored_rounds = store.rounds()
    assert "CompletionRateLow" in [a.rule for a in alerts]
    assert [a for a in own.events if isinstance(a, Alert)] == alerts
    assert len([e for e in own.events if isinstance(e, RoundMetrics)]) == 4
    rows = alert_rows(stored_rounds, total_rounds=4)
    completion = next(a for a in alerts if a.rule == "CompletionRateLow")
    assert completion.value == rows[completion.round]["completion_rate"]
    (run_tb,) = (tmp_path / "tb").iterdir()
    assert run_tb.name == result.run_dir.name
    assert any(run_tb.glob("events.out.tfevents.*"))
    try:  # the exporter stopped with the run
        urllib.request.urlopen(url, timeout=2)
        raise AssertionError("the exporter still serves after the run")
    except OSError:
        pass


def test_no_monitoring_settings_keep_the_store_as_the_only_sink(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "monitoring.alerts=[]", "devices.dropout_rate=0.0")
    result = run(cfg)
    assert "Prometheus metrics" not in result.notes
    assert result.run_dir is not None
    with RunStore.open(result.run_dir) as store:
        assert store.alerts() == []
