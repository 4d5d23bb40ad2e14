"""Factories for monitoring tests: consistent RoundMetrics and small synthetic runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from fedstrata.monitoring import (
    ClientFailure,
    RoundMetrics,
    RunStarted,
    RunStatus,
    RunStore,
    RunTotals,
)

MakeMetrics = Callable[..., RoundMetrics]


def _make_metrics(round_idx: int, **overrides: Any) -> RoundMetrics:
    """Valid metrics for ``round_idx``; rounds last 10 s, so sim time is 10 * (r + 1)."""
    n = max(round_idx, 0) + 1
    fields: dict[str, Any] = {
        "round_idx": round_idx,
        "accuracy": min(1.0, 0.05 + 0.05 * n),
        "loss": 2.0 / n,
        "train_loss": 2.5 / n,
        "clients_selected": 10,
        "clients_completed": 8,
        "clients_failed": 1,
        "clients_late": 1,
        "bytes_up": 1000 * n,
        "bytes_down": 4000,
        "sim_round_s": 10.0,
        "sim_time_s": 10.0 * n,
        "wall_round_s": 0.25,
        "compute_s": 6.0,
        "downlink_s": 1.5,
        "uplink_s": 2.0,
        "extras": {"test_f1": 0.1 * n},
    }
    fields.update(overrides)
    return RoundMetrics(**fields)


@pytest.fixture
def make_metrics() -> MakeMetrics:
    """``make_metrics(round_idx, **overrides)`` -> a valid RoundMetrics."""
    return _make_metrics


def _write_run(
    run_dir: Path,
    rounds: Sequence[RoundMetrics],
    *,
    config_yaml: str = "rounds: 3\n",
    run_id: str = "demo",
    failures: Sequence[ClientFailure] = (),
    finish: bool = True,
) -> Path:
    totals = RunTotals()
    with RunStore.create(run_dir) as store:
        store.emit(RunStarted(run_id, config_yaml, num_clients=10, num_params=42))
        for failure in failures:
            store.emit(failure)
        for metrics in rounds:
            store.emit(metrics)
            totals.add(metrics)
        if finish:
            store.emit(totals.finish(run_id, RunStatus.COMPLETED, wall_time_s=1.5))
    return run_dir


@pytest.fixture
def write_run() -> Callable[..., Path]:
    """``write_run(run_dir, rounds, config_yaml=, run_id=, failures=, finish=)`` -> run_dir."""
    return _write_run
