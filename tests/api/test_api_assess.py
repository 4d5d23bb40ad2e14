"""``fedstrata model inspect`` (Issue 17 part 2): its FLOPs against an independent
count, its per-device-class round times against the simulator's, its warnings."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from fedstrata.api import run
from fedstrata.api.assess import MAX_CLASSES, Assessment, _warnings, assess, device_classes
from fedstrata.cli import app
from fedstrata.config import FedConfig, load_config
from fedstrata.sim import ProfileTable
from fedstrata.torch_adapter import build_model
from fedstrata.torch_adapter.footprint import ModelFootprint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUIET = ["output.run_store=false", "output.report=false", "output.progress=false"]
BASE = [
    "data.name=digits", "data.partition=iid", "data.num_clients=12",
    "rounds.clients_per_round=12", "model.kind=cnn", "model.hidden=32",
    "client.epochs=1", "client.batch_size=16", "sim.workers=0", *QUIET,
]  # fmt: skip
CLASSES = ((2e8, 4.0), (1e9, 2.0), (5e9, 1.0))  # (FLOP/s, GB): three device models


def independent_flops(model: nn.Module, x: torch.Tensor, classes: int) -> float:
    """Forward + backward FLOPs per example of a cross-entropy step, by the dispatcher."""
    counter = FlopCounterMode(display=False)
    y = torch.zeros(x.shape[0], dtype=torch.long) % classes
    with counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / x.shape[0]


def test_flops_per_example_of_the_builtin_cnn_match_flop_counter() -> None:
    a = assess(load_config(None, "quickstart", BASE))
    model = build_model("cnn", (64,), 10, 32, device="cpu")
    reference = independent_flops(model, torch.randn(16, 64), 10)
    assert abs(a.footprint.flops_per_example - reference) <= 0.10 * reference
    assert a.footprint.counted_flops_per_example == pytest.approx(reference, rel=0.01)


@pytest.mark.usefixtures("fresh_imports")
def test_flops_per_example_of_the_image_example_match_flop_counter(tmp_path: Path) -> None:
    project = tmp_path / "image_cnn"
    shutil.copytree(EXAMPLES / "image_cnn", project, ignore=shutil.ignore_patterns("data", "runs"))
    a = assess(load_config(project / "fedstrata.yaml"))
    import image_cnn  # imported from the copy by load_config's project_dir

    reference = independent_flops(image_cnn.ShapesCNN(), torch.rand(16, 3, 16, 16), 5)
    assert abs(a.footprint.flops_per_example - reference) <= 0.10 * reference
    assert a.footprint.activation_bytes is not None
    assert a.footprint.activation_bytes > 0


def profiles_csv(path: Path, rows: list[tuple[float, float]]) -> Path:
    n = len(rows)
    ProfileTable(
        flops=np.array([f for f, _ in rows]),
        memory_gb=np.array([m for _, m in rows]),
        uplink_bps=np.full(n, 20e6),
        downlink_bps=np.full(n, 100e6),
        latency_s=np.full(n, 0.04),
        availability=np.ones(n),
    ).save_csv(path)
    return path


def config_with(path: Path, *extra: str) -> FedConfig:
    return load_config(None, "quickstart", [*BASE, f"devices.profiles_path={path}", *extra])


def test_round_time_of_each_device_class_is_within_20_percent_of_the_simulator(
    tmp_path: Path,
) -> None:
    mixed = [CLASSES[i % 3] for i in range(12)]
    a = assess(config_with(profiles_csv(tmp_path / "mixed.csv", mixed)))
    assert [c.clients for c in a.classes] == [4, 4, 4]
    for cls, (flops, memory) in zip(a.classes, CLASSES, strict=True):
        assert cls.gflops == pytest.approx(flops / 1e9)
        assert cls.memory_gb == memory
        only = profiles_csv(tmp_path / f"only_{flops:g}.csv", [(flops, memory)] * 12)
        sim = run(config_with(only, "rounds.rounds=1")).simulation.rounds[0]
        assert cls.compute_s == pytest.approx(sim.compute_s, rel=0.20)
        assert cls.deadline_s == pytest.approx(sim.sim_round_s, rel=0.20)
        assert cls.fits


def test_warns_when_a_class_cannot_hold_the_model_or_misses_the_deadline(tmp_path: Path) -> None:
    rows = [(1e7, 1e-5), (1e10, 8.0)] * 6  # a slow class with 10 kB of memory
    cfg = config_with(profiles_csv(tmp_path / "p.csv", rows), "rounds.deadline_s=1.0")
    a = assess(cfg)
    small, big = a.classes
    assert not small.fits
    assert big.fits
    assert small.deadline_s > 1.0 > big.deadline_s
    assert any("cannot hold the model" in w and small.name in w for w in a.warnings)
    assert any("rounds.deadline_s = 1 s" in w and small.name in w for w in a.warnings)
    assert not any(big.name in w for w in a.warnings)


def test_bf16_halves_the_saved_activations_of_the_cnn() -> None:
    fp32 = assess(load_config(None, "quickstart", BASE)).footprint
    bf16 = assess(load_config(None, "quickstart", [*BASE, "client.precision=bf16"])).footprint
    assert fp32.activation_bytes is not None
    assert bf16.activation_bytes is not None
    assert bf16.activation_bytes < 0.8 * fp32.activation_bytes
    assert bf16.precision == "bf16"


def test_device_classes_are_distinct_profiles_or_three_compute_bands() -> None:
    rng = np.random.default_rng(0)
    n = 41
    table = ProfileTable(
        flops=rng.uniform(1e8, 1e10, n), memory_gb=np.full(n, 4.0), uplink_bps=np.ones(n),
        downlink_bps=np.ones(n), latency_s=np.zeros(n), availability=np.ones(n),
    )  # fmt: skip
    bands = device_classes(table)
    assert [name for name, _ in bands] == ["slowest 25%", "middle 50%", "fastest 25%"]
    ids = np.concatenate([i for _, i in bands])
    assert sorted(ids) == list(range(n))
    slow, _, fast = (table.flops[i] for _, i in bands)
    assert slow.max() <= fast.min()
    few = ProfileTable(
        flops=np.repeat(np.arange(1, MAX_CLASSES + 1) * 1e9, 2), memory_gb=np.full(16, 2.0),
        uplink_bps=np.ones(16), downlink_bps=np.ones(16), latency_s=np.zeros(16),
        availability=np.ones(16),
    )  # fmt: skip
    assert [len(i) for _, i in device_classes(few)] == [2] * MAX_CLASSES


def test_the_cli_prints_tables_or_json() -> None:
    args = ["model", "inspect", "--preset", "quickstart", "--set", "data.num_clients=20"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["footprint"]["params"] == 64 * 128 + 128 + 128 * 10 + 10
    assert data["codecs"][0]["name"] == "dense"
    assert {c["name"] for c in data["classes"]} == {"slowest 25%", "middle 50%", "fastest 25%"}
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "one round per device class" in text.stdout
    bad = CliRunner().invoke(app, [*args, "--set", "client.precision=fp64"])
    assert bad.exit_code == 2


def test_warns_when_the_layer_count_misses_the_models_work() -> None:
    fp = ModelFootprint(
        params=10, trainable=10, flops_per_example=1e6, counted_flops_per_example=2e6,
        activation_bytes=None, batch_size=8, optimizer_state_floats=0, precision="fp32",
    )  # fmt: skip
    draft = Assessment("m", fp, (), (), round_s=1.0, deadline_s=None, warnings=())
    (warning,) = _warnings(draft)
    assert "FlopCounterMode counts 2e+06" in warning
    assert "off by -50%" in warning
    close = replace(fp, counted_flops_per_example=1.05e6)
    assert _warnings(replace(draft, footprint=close)) == ()
