"""``fedstrata dashboard RUN_DIR``: the app it serves, the run's budget and alert rules."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedstrata.cli import app
from fedstrata.config import dump_config, load_config
from fedstrata.monitoring import RunStarted, RunStore
from fedstrata.monitoring.dashboard import BackgroundServer

PRIVATE = ["privacy.mechanism=central", "privacy.epsilon=3", "rounds.rounds=40",
           "monitoring.alerts=[]"]  # fmt: skip


def _write(run_dir: Path, overrides: list[str]) -> None:
    cfg = load_config(overrides=overrides)
    with RunStore.create(run_dir) as store:
        store.emit(RunStarted("cli-run", dump_config(cfg), num_clients=5, num_params=3))


@pytest.fixture
def served_app(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replaces ``uvicorn.run``: records what the command would serve."""
    seen: dict[str, Any] = {}

    def fake_run(asgi: Any, *, host: str, port: int, log_level: str) -> None:
        seen.update(app=asgi, host=host, port=port)

    monkeypatch.setattr("uvicorn.run", fake_run)
    return seen


def test_dashboard_serves_the_run_with_its_budget_and_rules(
    tmp_path: Path, served_app: dict[str, Any]
) -> None:
    _write(tmp_path / "runs" / "a", PRIVATE)
    result = CliRunner().invoke(app, ["dashboard", str(tmp_path / "runs"), "--port", "0"])
    assert result.exit_code == 0, result.output
    assert served_app["port"] == 0
    with BackgroundServer(served_app["app"]) as server:
        with urllib.request.urlopen(server.url + "api/meta", timeout=10) as response:
            meta = json.loads(response.read())
        with urllib.request.urlopen(server.url + "api/alerts", timeout=10) as response:
            alerts = json.loads(response.read())
    assert meta["run_id"] == "cli-run"
    assert meta["run_dir"].endswith("a")
    assert meta["budget"] == {"epsilon": 3.0, "planned_rounds": 40}
    assert alerts["rules"] == 0  # the run's config turned alerts off


def test_dashboard_without_dp_shows_no_budget_and_default_rules(
    tmp_path: Path, served_app: dict[str, Any]
) -> None:
    _write(tmp_path / "run", [])
    result = CliRunner().invoke(app, ["dashboard", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    with BackgroundServer(served_app["app"]) as server:
        with urllib.request.urlopen(server.url + "api/meta", timeout=10) as response:
            assert json.loads(response.read())["budget"] is None
        with urllib.request.urlopen(server.url + "api/alerts", timeout=10) as response:
            assert json.loads(response.read())["rules"] == 5


def test_dashboard_of_a_missing_run_names_it(tmp_path: Path, served_app: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["dashboard", str(tmp_path / "nope")])
    assert result.exit_code == 2
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "nope does not exist" in output
    assert not served_app


def test_live_dashboard_waits_for_the_run_store(
    tmp_path: Path, served_app: dict[str, Any]
) -> None:
    empty = tmp_path / "runs"
    empty.mkdir()
    args = ["dashboard", str(empty), "--live", "--wait-s", "0.3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "holds none" in " ".join(result.output.split())
