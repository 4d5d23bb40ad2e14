import json
import logging
import sqlite3
import time
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from fedstrata.cli import app

runner = CliRunner()


def _background_report(run_dir: Path, limit_s: float = 120.0) -> Path:
    """The report ``fedstrata run`` writes in a process of its own, once it is there."""
    report, deadline = run_dir / "report.html", time.monotonic() + limit_s
    while not report.exists():
        assert time.monotonic() < deadline, (run_dir / "report.log").read_text()
        time.sleep(0.1)  # polling for the file, not waiting blindly
    return report


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
    assert "being written in the background" in res.output
    assert "<svg" in _background_report(run_dir).read_text()
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


def test_pki_dev_host_adds_the_server_names(tmp_path):
    """Issue 11 defect 16: ``pki dev --host NAME`` (repeatable) names the server."""
    from cryptography import x509

    res = runner.invoke(
        app,
        [
            "pki",
            "dev",
            str(tmp_path),
            "--clients",
            "2",
            "--host",
            "center-host",
            "--host",
            "10.0.0.5",
        ],
    )
    assert res.exit_code == 0, res.output
    cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "center-host" in sans.get_values_for_type(x509.DNSName)
    assert "10.0.0.5" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    bad = runner.invoke(app, ["pki", "dev", str(tmp_path / "b"), "--host", "a b"])
    assert bad.exit_code == 2
    assert "neither an IP address nor a DNS name" in bad.output


def test_token_comes_from_a_file_or_the_environment_and_the_flag_warns(
    tmp_path, monkeypatch, capsys
):
    """Issue 11 defect 9: a token on the command line shows in ``ps``: the flag warns
    and points to ``--token-file`` and FEDSTRATA_TOKEN, which are read instead."""
    import pytest

    from fedstrata.cli.deploy import read_token
    from fedstrata.errors import ConfigError

    monkeypatch.delenv("FEDSTRATA_TOKEN", raising=False)
    path = tmp_path / "token"
    path.write_text("from-file\n")
    path.chmod(0o600)
    assert read_token("", path) == "from-file"
    monkeypatch.setenv("FEDSTRATA_TOKEN", "from-env")
    assert read_token("", None) == "from-env"
    assert capsys.readouterr().err == ""
    assert read_token("on-the-command-line", None) == "on-the-command-line"
    warning = capsys.readouterr().err
    assert "--token-file" in warning
    assert "FEDSTRATA_TOKEN" in warning
    monkeypatch.delenv("FEDSTRATA_TOKEN")
    with pytest.raises(ConfigError, match="no bearer token"):
        read_token("", None)
    path.chmod(0o644)
    read_token("", path)
    assert "readable by other users" in capsys.readouterr().err


def test_client_refuses_a_missing_token_file_before_connecting(tmp_path, monkeypatch):
    """Issue 11 defect 9: ``client --token-file`` is an option; a bad file fails fast."""
    monkeypatch.delenv("FEDSTRATA_TOKEN", raising=False)
    res = runner.invoke(app, ["client", "--token-file", str(tmp_path / "missing")])
    assert res.exit_code == 2
    assert "--token-file" in res.output
    helped = runner.invoke(app, ["client", "--help"])
    assert "--token-file" in helped.output


SMALL_RUN = [
    "run",
    "--quiet",
    "--set",
    "sim.workers=0",
    "--set",
    "output.run_store=false",
    "--set",
    "data.num_clients=12",
    "--set",
    "rounds.clients_per_round=6",
]


def test_banner_counts_the_clients_of_an_npz_folder(tmp_path):
    """Issue 11 defect 11: the banner shows the folder's 30 clients, not the default 100."""
    rng = np.random.default_rng(0)
    for c in range(30):
        x = rng.standard_normal((6, 4)).astype(np.float32)
        np.savez(tmp_path / f"client_{c}.npz", x=x, y=np.arange(6) % 3)
    args = [*SMALL_RUN, "--set", "data.name=npz", "--set", f"data.path={tmp_path}"]
    res = runner.invoke(app, [*args, "--set", "rounds.rounds=1", "--set", "model.kind=logreg"])
    assert res.exit_code == 0, res.output
    banner = res.output.splitlines()[0]
    assert ": 30 clients (npz folder" in banner, banner


def test_diverging_clients_log_one_line_per_round_with_a_hint(caplog):
    """Issue 11 defect 21: client.lr=1e30 gives one warning per round, a hint, a verdict."""
    caplog.set_level(logging.WARNING)
    res = runner.invoke(app, [*SMALL_RUN, "--set", "client.lr=1e30", "--set", "rounds.rounds=3"])
    assert res.exit_code == 0, res.output
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    per_round = [w for w in warnings if w.startswith("round ")]
    assert [w.split(":")[0] for w in per_round] == ["round 0", "round 1", "round 2"], warnings
    assert all("x non-finite update (NaN/Inf)" in w for w in per_round), per_round
    assert all("lower client.lr" in w for w in per_round), per_round
    alerts = [w for w in warnings if w.startswith("alert ")]  # Issue 16: logged once
    assert [a.split(":")[1].strip() for a in alerts] == ["CompletionRateLow"], alerts
    (verdict,) = [w for w in warnings if not w.startswith(("round ", "alert "))]
    assert verdict.startswith("18 of 18 client updates failed in 3 rounds"), verdict
    assert "in-process" in res.output  # where the clients trained


def test_report_on_a_missing_directory_says_so_plainly(tmp_path):
    """Issue 11 defect 24: no internal name (``RunStore.open``) in the error."""
    res = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2
    text = " ".join(res.output.split())  # rich wraps at 80 columns
    assert text.startswith("error: run directory /"), text
    assert text.endswith("does not exist"), text
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "RunStore" not in text
    assert text.endswith("is not a run directory: metrics.sqlite is missing"), text


def test_client_data_option_reaches_the_deployment(tmp_path, monkeypatch):
    """Issue 14 part 2: ``fedstrata client --data DIR`` hands DIR to the task's reader;
    without a task that has ``local_data`` it is refused before any connection."""
    monkeypatch.setenv("FEDSTRATA_TOKEN", "t")
    res = runner.invoke(app, ["client", "--set", "model.kind=logreg", "--data", str(tmp_path)])
    assert res.exit_code != 0
    assert "--data needs a task with local_data" in res.output
