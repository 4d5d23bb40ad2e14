"""Issue 17 "must show": bf16 local training (CPU) ends within 0.5 accuracy points of
fp32 on the quickstart federation (its first 30 rounds) and on the image example (its
config's 20 rounds), each pair compared on the same rounds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedstrata.api import run
from fedstrata.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUIET = ["output.run_store=false", "output.report=false", "output.progress=false"]


def final_accuracy(path: Path | None, preset: str | None, overrides: list[str]) -> float:
    result = run(load_config(path, preset, [*overrides, *QUIET]))
    accuracy = result.simulation.rounds[-1].accuracy
    assert accuracy is not None
    return accuracy


@pytest.mark.slow
def test_bf16_matches_fp32_on_the_quickstart_federation() -> None:
    common = ["rounds.rounds=30", "sim.workers=0"]
    fp32 = final_accuracy(None, "quickstart", [*common, "client.precision=fp32"])
    bf16 = final_accuracy(None, "quickstart", [*common, "client.precision=bf16"])
    assert fp32 > 0.8  # it learned (chance: 0.1)
    assert abs(bf16 - fp32) <= 0.005


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_imports")
def test_bf16_matches_fp32_on_the_image_example(tmp_path: Path) -> None:
    project = tmp_path / "image_cnn"
    shutil.copytree(EXAMPLES / "image_cnn", project, ignore=shutil.ignore_patterns("data", "runs"))
    config = project / "fedstrata.yaml"
    fp32 = final_accuracy(config, None, ["client.precision=fp32"])
    bf16 = final_accuracy(config, None, ["client.precision=bf16"])
    assert fp32 > 0.9  # five classes: chance 0.2
    assert abs(bf16 - fp32) <= 0.005
