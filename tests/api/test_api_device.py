"""``fedstrata device bench``: fp32 throughput and the bf16 / fp16 speed factors,
measured here and stored in the registry."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from fedstrata.api.device import bench_device
from fedstrata.config import load_config
from fedstrata.scheduling import Registry

BASE = [
    "data.name=digits", "data.num_clients=4", "rounds.clients_per_round=4", "model.kind=logreg",
    "client.epochs=1", "client.batch_size=16", "client.precision=bf16",
]  # fmt: skip


def test_bench_measures_and_registers_the_speed_factors(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    m = bench_device(load_config(None, None, BASE), registry_url=str(db), device_id=3, repeats=1)
    assert m.cpu_score > 0
    assert m.bf16_speedup > 0
    assert m.fp16_speedup > 0
    assert (m.bf16_speedup, m.fp16_speedup) != (1.0, 1.0)  # measured, not the default
    with Registry.open(db) as registry:
        got = registry.devices([3])
    assert got.cpu_score[0] == pytest.approx(m.cpu_score)
    assert got.bf16_speedup[0] == pytest.approx(m.bf16_speedup)
    assert got.fp16_speedup[0] == pytest.approx(m.fp16_speedup)


def test_a_precision_torch_cannot_train_at_keeps_the_factor_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without 16-bit autocast on this device the factors stay 1.0, as the docs say,
    and the fp32 throughput is still measured."""
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with caplog.at_level(logging.WARNING, logger="fedstrata.api.device"):
        m = bench_device(load_config(None, None, BASE), repeats=1)
    assert m.cpu_score > 0
    assert (m.bf16_speedup, m.fp16_speedup) == (1.0, 1.0)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "bf16 speed factor not measured (kept 1.0)",
        "fp16 speed factor not measured (kept 1.0)",
    ]
