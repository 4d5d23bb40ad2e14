import json
import sqlite3

import numpy as np
from typer.testing import CliRunner

from fedstrata.cli import app

runner = CliRunner()


def test_run_writes_a_run_directory_and_report(tmp_path):
    res = runner.invoke(
        app,
        [
            "run",
            "--preset",
            "quickstart",
            "--quiet",
            "--set",
            "rounds.rounds=2",
            "--set",
            "data.num_clients=12",
            "--set",
            "rounds.clients_per_round=6",
            "--set",
            f"output.dir={tmp_path}",
        ],
    )
    assert res.exit_code == 0, res.output
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2
    assert 0 <= summary["final_accuracy"] <= 1
    assert "rounds: 2" in (run_dir / "config.yaml").read_text()
    with sqlite3.connect(run_dir / "metrics.sqlite") as db:
        assert db.execute("select count(*) from rounds").fetchone()[0] == 2
    assert "<svg" in (run_dir / "report.html").read_text()
    model = np.load(run_dir / "model.npz")
    assert len(model.files) >= 1
    again = runner.invoke(app, ["report", str(run_dir)])
    assert again.exit_code == 0
    assert again.output.strip().endswith("report.html")


def test_invalid_config_names_the_field():
    res = runner.invoke(app, ["run", "--set", "client.lr=-3", "--quiet"])
    assert res.exit_code == 2
    assert "client.lr" in res.output
    assert "greater than 0" in res.output


def test_unknown_preset_lists_the_available_ones():
    res = runner.invoke(app, ["run", "--preset", "nope"])
    assert res.exit_code == 2
    assert "quickstart" in res.output


def test_presets_and_show_config():
    assert "quickstart" in runner.invoke(app, ["presets"]).output
    res = runner.invoke(app, ["show-config", "--preset", "w1", "--json"])
    assert json.loads(res.output)["data"]["partition"] == "shards"


def test_configuration_docs_are_current():
    from pathlib import Path

    from fedstrata.config.reference import config_reference

    docs = Path(__file__).parents[1] / "docs" / "configuration.md"
    assert docs.read_text() == config_reference() + "\n", (
        "docs/configuration.md is stale: run `fedstrata config-reference > docs/configuration.md`"
    )
