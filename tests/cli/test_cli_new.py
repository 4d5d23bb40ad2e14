"""Issue 14 part 4: `fedstrata new NAME --template tabular|image|text` writes a project
that `fedstrata run` trains inside the new folder with no further set-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fedstrata
from fedstrata.cli import app
from fedstrata.cli.new import Template, create_project, package_name, project_config
from fedstrata.errors import ConfigError

runner = CliRunner()

# template -> (headline metric in summary.json, a value well above chance)
HEADLINE = {
    Template.tabular: ("test_auc", 0.75),  # chance 0.5
    Template.image: ("final_accuracy", 0.5),  # four classes: chance 0.25
    Template.text: ("final_accuracy", 0.7),  # two classes: chance 0.5
}


def _summary(project: Path) -> dict:
    (run_dir,) = (project / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    assert (run_dir / "model.pt").is_file()
    return {**summary, **summary["final_extras"]}


@pytest.mark.usefixtures("fresh_imports")
@pytest.mark.parametrize("template", list(Template))
def test_new_then_run_in_an_empty_directory(
    template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part 4 must-show: in an empty directory, `fedstrata new demo --template X` then
    `fedstrata run` inside the new folder trains, and the headline metric beats chance."""
    monkeypatch.chdir(tmp_path)
    created = runner.invoke(app, ["new", "demo", "--template", template.value])
    assert created.exit_code == 0, created.output
    project = tmp_path / "demo"
    assert {"fedstrata.yaml", "README.md", "prepare_data.py", "demo", "data"} <= {
        p.name for p in project.iterdir()
    }
    assert "{{" not in (project / "demo" / "task.py").read_text()
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["run", "--quiet"])
    assert result.exit_code == 0, result.output
    metric, above_chance = HEADLINE[template]
    summary = _summary(project)
    assert summary["rounds"] >= 5
    assert summary[metric] > above_chance, (metric, summary[metric])


def test_new_and_run_as_real_commands(tmp_path: Path) -> None:
    """Part 4: the installed command line, in fresh processes, from an empty directory
    (the templates are found as package data; the task is imported from the project)."""
    src = str(Path(fedstrata.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cli = [sys.executable, "-c", "from fedstrata.cli import main; main()"]
    new = subprocess.run([*cli, "new", "demo"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120, check=False)  # fmt: skip
    assert new.returncode == 0, new.stderr
    assert "cd demo && fedstrata run" in new.stdout
    run = subprocess.run([*cli, "run", "--quiet", "--set", "rounds.rounds=5"],
                         cwd=tmp_path / "demo", env=env, capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "final test_auc" in run.stdout
    assert _summary(tmp_path / "demo")["test_auc"] > 0.75


def test_new_refuses_an_existing_non_empty_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part 4: an existing non-empty folder is never overwritten; an empty one is used."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["new", "taken"])
    assert result.exit_code == 2
    assert "already exists and is not empty" in result.output
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert create_project(tmp_path / "empty", Template.text).is_file()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="already exists"):
        create_project(tmp_path / "file")


@pytest.mark.parametrize("name", ["1st", "my project", "class", "dé"])
def test_new_refuses_a_name_that_is_no_python_package(name: str) -> None:
    """Part 4: the project's name becomes its package; a bad one is refused, naming it."""
    with pytest.raises(ConfigError, match=f"project name {name!r}"):
        package_name(name)
    assert package_name("credit-risk") == "credit_risk"


def test_run_reads_a_project_folder_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part 4: `fedstrata run DIR` reads DIR/fedstrata.yaml (a missing one is an error);
    `fedstrata run` reads ./fedstrata.yaml unless a file or a preset is named."""
    result = runner.invoke(app, ["run", str(tmp_path), "--quiet"])
    assert result.exit_code == 2
    assert "fedstrata.yaml" in result.output
    monkeypatch.chdir(tmp_path)
    assert project_config(None, None) is None  # no file here: the quickstart preset
    Path("fedstrata.yaml").write_text("rounds: {rounds: 2}\n")
    assert project_config(None, None) == Path("fedstrata.yaml")
    assert project_config(None, "w1") is None
    assert project_config(Path("other.yaml"), None) == Path("other.yaml")
    assert project_config(tmp_path, None) == tmp_path / "fedstrata.yaml"


def test_every_template_file_is_package_data() -> None:
    """Part 4: the wheel ships the templates (pyproject's package-data covers each file)."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["fedstrata"]
    package = root / "src" / "fedstrata"
    files = [p for p in (package / "templates").rglob("*") if p.is_file()]
    files = [p for p in files if "__pycache__" not in p.parts]
    assert len(files) >= 3 * 5
    for path in files:
        rel = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel
