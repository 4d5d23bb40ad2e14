"""Issue 14 part 5: each example in examples/ runs its quick mode through `fedstrata run`
and reaches its headline metric (the three examples run in CI)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedstrata.cli import app
from fedstrata.monitoring import RunStore

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_quick(example: str, tmp_path: Path) -> tuple[dict, Path]:
    """Copy ``examples/<example>`` (without data or runs) and run its quick mode."""
    project = tmp_path / example
    shutil.copytree(EXAMPLES / example, project, ignore=shutil.ignore_patterns("data", "runs"))
    args = ["run", str(project), "--quiet", "--set", "rounds.rounds=3"]
    args += ["--set", f"output.dir={tmp_path / 'runs'}", "--set", "output.report=false"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["rounds"] == 3
    assert summary["clients_failed"] == 0
    return summary, project


@pytest.mark.usefixtures("fresh_imports")
def test_credit_risk_from_branch_csv_files_reaches_its_auc(tmp_path: Path) -> None:
    """Part 5 (a): per-branch CSV tables written on first run, imbalanced labels, AUC
    the headline among several named metrics."""
    summary, project = run_quick("credit_risk", tmp_path)
    branches = sorted((project / "data").glob("branch_*.csv"))
    assert len(branches) == 12
    rates = [np.loadtxt(p, delimiter=",", skiprows=1, usecols=-1).mean() for p in branches]
    assert max(rates) < 0.3  # defaults are the rare class in every branch
    extras = summary["final_extras"]
    assert extras["test_auc"] > 0.7  # chance: 0.5
    assert {"test_average_precision", "test_f1"} <= set(extras)
    run_dir = next((tmp_path / "runs").iterdir())
    aucs = [r.extras["test_auc"] for r in RunStore.open(run_dir).rounds()]
    assert len(aucs) == 3


@pytest.mark.usefixtures("fresh_imports")
def test_image_cnn_with_a_custom_dataset_and_augmentation_learns(tmp_path: Path) -> None:
    """Part 5 (b): a custom torch Dataset with augmentation trains a CNN with batch norm."""
    summary, project = run_quick("image_cnn", tmp_path)
    assert len(list((project / "data").glob("client_*.npz"))) == 8
    assert summary["final_accuracy"] > 0.4  # five classes: chance 0.2
    example = sys.modules["image_cnn"]  # imported from the copy by `fedstrata run`
    train, test = example.client_data(0), example.test_data()
    assert isinstance(train, torch.utils.data.Dataset)
    assert not isinstance(train, torch.utils.data.TensorDataset)
    torch.manual_seed(0)
    views = [train[0][0] for _ in range(8)]
    assert any(not torch.equal(views[0], v) for v in views[1:])  # augmented per draw
    assert torch.equal(test[0][0], test[0][0])  # the test set is not augmented


@pytest.mark.usefixtures("fresh_imports")
def test_text_transformer_from_a_config_in_code_learns(tmp_path: Path) -> None:
    """Part 5 (c): a TransformerEncoder classifier with its own optimizer, schedule and
    loop, on synthetic tokens made in memory (no downloads, no files)."""
    summary, project = run_quick("text_transformer", tmp_path)
    assert not (project / "data").exists()
    assert summary["final_accuracy"] > 0.6  # three classes: chance 0.33
    assert summary["final_extras"]["test_macro_f1"] > 0.5
    example = sys.modules["text_transformer"]
    small = example.TransformerClassifier(example.TextConfig(layers=1, d_model=16, heads=2))
    assert len(small.encoder.layers) == 1
    assert small(torch.ones((2, 5), dtype=torch.int64)).shape == (2, 3)
