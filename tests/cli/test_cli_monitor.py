"""``fedstrata alerts export`` / ``list``, and the shipped rules file (``promtool``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fedstrata.cli import app
from fedstrata.monitoring import Alert, RunStore
from fedstrata.monitoring.alerts import DEFAULT_RULES, RULES_FILE, prometheus_rules_yaml


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("FEDSTRATA_CI") == "1":
            pytest.fail("promtool is missing (FEDSTRATA_CI=1: the Prometheus tests must run)")
        pytest.skip("promtool is not installed")
    return found


def test_the_shipped_rules_file_is_the_generated_text() -> None:
    assert RULES_FILE.read_text(encoding="utf-8") == prometheus_rules_yaml(DEFAULT_RULES)


def test_promtool_accepts_the_shipped_rules() -> None:
    out = subprocess.run(
        [_promtool(), "check", "rules", str(RULES_FILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(DEFAULT_RULES)} rules found" in out.stdout


def test_export_writes_the_configured_rules(tmp_path: Path) -> None:
    config = tmp_path / "fed.yaml"
    rules = [{"name": "SlowRounds", "metric": "round_time_s", "op": ">", "threshold": 30,
              "for_rounds": 2, "severity": "critical"}]  # fmt: skip
    config.write_text(yaml.safe_dump({"monitoring": {"alerts": rules}}))
    target = tmp_path / "rules.yml"
    result = CliRunner().invoke(
        app, ["alerts", "export", str(config), "--round-interval", "10", "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    (entry,) = yaml.safe_load(target.read_text())["groups"][0]["rules"]
    assert entry["alert"] == "SlowRounds"
    assert entry["expr"] == "fedstrata_round_time_s > 30"
    assert entry["for"] == "10s"
    stdout = CliRunner().invoke(app, ["alerts", "export"])
    assert stdout.output == prometheus_rules_yaml(DEFAULT_RULES)


def test_export_names_a_bad_rule() -> None:
    bad = "monitoring.alerts=[{name: X, metric: nope, op: '>'}]"
    result = CliRunner().invoke(app, ["alerts", "export", "--set", bad])
    assert result.exit_code == 2
    assert "not a federation metric" in " ".join(result.output.split())


def test_list_prints_a_runs_alerts(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "run") as store:
        store.emit(Alert("SyncShareHigh", 4, 0.8, "warning", "sync share 0.8"))
    result = CliRunner().invoke(app, ["alerts", "list", str(tmp_path / "run")])
    assert result.exit_code == 0
    assert "round     4  warning   sync share 0.8" in result.output
    missing = CliRunner().invoke(app, ["alerts", "list", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "does not exist" in " ".join(missing.output.split())


def test_run_with_metrics_port_serves_and_names_the_url(tmp_path: Path) -> None:
    small = [
        "data.num_clients=4", "rounds.clients_per_round=4", "rounds.rounds=1",
        "model.kind=logreg", "client.steps=1", "client.epochs=null", "sim.workers=0",
        "output.report=false", f"output.dir={tmp_path}",
    ]  # fmt: skip
    args = ["run", "--quiet", "--metrics-port", "0"]
    for item in small:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Prometheus metrics" in text
    assert "http://127.0.0.1:" in text
