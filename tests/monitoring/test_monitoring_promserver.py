"""Issue 16: a real Prometheus server scrapes a running federation's exporter, loads the
shipped alert rules, and an alert that should fire fires (``ALERTS``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.errors import TransportError
from fedstrata.monitoring.alerts import DEFAULT_RULES, RULES_FILE, prometheus_rules_yaml
from fedstrata.monitoring.prometheus import PrometheusExporter
from fedstrata.monitoring.promserver import PrometheusServer, Sample, find_prometheus

RUN = "prom-it"


@pytest.fixture
def exporter() -> Iterator[PrometheusExporter]:
    with PrometheusExporter(RUN, total_rounds=4) as exp:
        exp.serve(0)
        yield exp


@pytest.fixture
def prometheus(tmp_path: Path, exporter: PrometheusExporter) -> Iterator[PrometheusServer]:
    """A private Prometheus (temp dir, free port, 1 s scrape) scraping ``exporter`` with
    the shipped rules and the same rules at a 1 s round interval (``fast.yml``)."""
    if find_prometheus() is None:
        if os.environ.get("FEDSTRATA_CI") == "1":
            pytest.fail("the prometheus binary is missing (FEDSTRATA_CI=1: this test must run)")
        pytest.skip("the prometheus binary is not installed")
    fast = tmp_path / "fast.yml"
    fast.write_text(prometheus_rules_yaml(DEFAULT_RULES, round_interval_s=1, group="fast"))
    server = PrometheusServer(
        tmp_path / "prom", [f"127.0.0.1:{exporter.port}"], rule_files=[RULES_FILE, fast]
    )
    with server:
        yield server


def _one(samples: list[Sample]) -> float:
    ((_, value),) = samples
    return value


def test_prometheus_scrapes_a_federation_and_fires_its_alerts(
    tmp_path: Path, exporter: PrometheusExporter, prometheus: PrometheusServer
) -> None:
    cfg = load_config(
        overrides=[
            "data.num_clients=8", "rounds.rounds=4", "rounds.clients_per_round=6",
            "model.kind=logreg", "client.steps=2", "client.epochs=null", "sim.workers=0",
            "devices.dropout_rate=0.5", "output.progress=false", "output.run_store=false",
            "monitoring.alerts=[]",
        ]
    )  # fmt: skip
    rounds = run(cfg, sinks=[exporter]).simulation.rounds
    last = rounds[-1]
    assert last.clients_completed / last.clients_selected < 0.95  # the seed's dropouts

    done = prometheus.wait_for("fedstrata_rounds_total", lambda r: r and r[0][1] == 4)
    labels, _ = done[0]
    assert (labels["run"], labels["tier"], labels["node"]) == (RUN, "center", "0")
    assert labels["job"] == "fedstrata"
    assert _one(prometheus.query("fedstrata_bytes_up_total")) == sum(m.bytes_up for m in rounds)
    assert _one(prometheus.query("fedstrata_round_seconds_count")) == 4
    assert _one(prometheus.query("fedstrata_round_seconds_sum")) == pytest.approx(
        sum(m.sim_round_s for m in rounds)
    )
    assert _one(prometheus.query("fedstrata_completion_rate")) == pytest.approx(
        last.clients_completed / last.clients_selected
    )
    assert _one(prometheus.query("fedstrata_accuracy")) == pytest.approx(last.accuracy)

    groups = {g["name"]: g for g in prometheus.api("rules")["groups"]}
    assert sorted(groups) == ["fast", "fedstrata"]
    shipped = groups["fedstrata"]["rules"]
    assert sorted(r["name"] for r in shipped) == sorted(r.name for r in DEFAULT_RULES)
    assert all(r["health"] == "ok" for g in groups.values() for r in g["rules"])

    firing = f'ALERTS{{alertname="CompletionRateLow", alertstate="firing", run="{RUN}"}}'
    fired = prometheus.wait_for(firing, bool)
    assert {s[0]["severity"] for s in fired} == {"warning"}


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="cannot start Prometheus"):
        PrometheusServer(tmp_path / "a", [], binary=str(tmp_path / "nope")).start()
    binary = find_prometheus()
    if binary is None:
        pytest.skip("the prometheus binary is not installed")
    bad = tmp_path / "bad.yml"
    bad.write_text("groups: [{name: x, rules: [{alert: A, expr: 'not promql ('}]}]\n")
    with pytest.raises(TransportError, match="exited at start"):
        PrometheusServer(tmp_path / "b", [], rule_files=[bad], binary=binary).start()
