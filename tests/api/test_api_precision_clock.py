"""Issue 17: the simulated clock charges each device's precision speed factor, and
fp16 loss scaling's skipped steps reach the round's typed metrics, the run store and
the summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedstrata.api import run
from fedstrata.api.assess import assess
from fedstrata.api.plan import predict
from fedstrata.config import load_config
from fedstrata.monitoring import RunStore
from fedstrata.sim import ProfileTable
from fedstrata.torch_adapter import Task

QUIET = ["output.report=false", "output.progress=false", "sim.workers=0"]
BASE = [
    "data.name=digits", "data.num_clients=6", "rounds.clients_per_round=6",
    "rounds.rounds=2", "model.kind=logreg", "client.epochs=1", "client.batch_size=16",
    *QUIET,
]  # fmt: skip


def profiles_csv(path: Path, n: int, bf16: float) -> Path:
    ProfileTable(
        flops=np.geomspace(1e7, 1e9, n),
        memory_gb=np.full(n, 4.0),
        uplink_bps=np.full(n, 2e7),
        downlink_bps=np.full(n, 1e8),
        latency_s=np.full(n, 0.01),
        availability=np.ones(n),
        bf16_speedup=np.full(n, bf16),
    ).save_csv(path)
    return path


def test_bf16_on_profiles_with_factor_two_charges_half_the_compute(tmp_path: Path) -> None:
    csv = profiles_csv(tmp_path / "p.csv", 6, bf16=2.0)

    def compute(precision: str) -> list[float]:
        config = load_config(None, None, [*BASE, f"devices.profiles_path={csv}",
                                          f"client.precision={precision}",
                                          "output.run_store=false"])  # fmt: skip
        return [m.compute_s for m in run(config).simulation.rounds]

    fp32, bf16 = compute("fp32"), compute("bf16")
    assert all(c > 0 for c in fp32)
    np.testing.assert_allclose(bf16, np.array(fp32) / 2, rtol=1e-12)


def test_plan_and_inspect_use_the_same_factor(tmp_path: Path) -> None:
    csv = profiles_csv(tmp_path / "p.csv", 6, bf16=4.0)
    over = [*BASE, f"devices.profiles_path={csv}", "output.run_store=false"]
    fp32 = load_config(None, None, [*over, "client.precision=fp32"])
    bf16 = load_config(None, None, [*over, "client.precision=bf16"])
    a32, a16 = assess(fp32), assess(bf16)
    for c32, c16 in zip(a32.classes, a16.classes, strict=True):
        assert c16.speedup == 4.0
        assert c32.speedup == 1.0
        assert c16.compute_s == c32.compute_s / 4
    p32, p16 = predict(fp32), predict(bf16)
    assert p16.flat_s < p32.flat_s  # the same rounds, a quarter of the compute
    assert a16.round_s == p16.flat_s


def huge_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, target) * 1e35  # inf under fp16's scale


def small_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(1), nn.Linear(64, 10))


def test_fp16_overflow_counts_skipped_steps_in_round_metrics_store_and_summary(
    tmp_path: Path,
) -> None:
    config = load_config(None, None, [*BASE, "client.precision=fp16", f"output.dir={tmp_path}"])
    result = run(config, task=Task(model=small_model, loss=huge_loss))
    rounds = result.simulation.rounds
    for m in rounds:
        assert m.precision is not None
        assert m.clients_completed == 6
        assert m.precision.clients_skipping == 6  # every step of every client overflowed
        assert m.precision.skipped_steps > 0
        assert m.precision.loss_scale_min is not None
        assert m.precision.loss_scale_min < 2.0**16  # lowered
    assert result.run_dir is not None
    store = RunStore.open(result.run_dir)
    assert [r.precision for r in store.rounds()] == [m.precision for m in rounds]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["skipped_steps"] == sum(
        m.precision.skipped_steps for m in rounds if m.precision
    )
    assert (
        summary["final_stats"]["precision"]["skipped_steps"] == rounds[-1].precision.skipped_steps
    )


def test_fp32_and_bf16_rounds_carry_no_precision_record() -> None:
    config = load_config(None, None, [*BASE, "client.precision=bf16", "output.run_store=false"])
    assert all(m.precision is None for m in run(config).simulation.rounds)
