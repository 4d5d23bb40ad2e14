"""``fedstrata scenario``: list the published cases, run one, refuse an unknown name."""

import json
from pathlib import Path

from typer.testing import CliRunner

from fedstrata.cli import app
from fedstrata.scenarios import SCENARIOS


def test_without_a_name_it_lists_every_scenario() -> None:
    result = CliRunner().invoke(app, ["scenario"])
    assert result.exit_code == 0, result.output
    for name in SCENARIOS:
        assert name in result.output


def test_unknown_scenario_is_an_error_naming_the_known_ones() -> None:
    result = CliRunner().invoke(app, ["scenario", "no-such-case"])
    assert result.exit_code == 2
    assert "unknown scenario 'no-such-case'" in result.output
    assert "finance-100-branches" in result.output


def test_quick_run_writes_the_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["scenario", "ecommerce-availability", "--quick", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "scenario.json").read_text())
    assert data["published"] == 0.997
    assert data["quick"] is True
    assert data["baseline"] is not None
    assert data["measured"] is not None
    assert (tmp_path / "compare.html").exists()
    assert "| measured here |" in (tmp_path / "scenario.md").read_text()
