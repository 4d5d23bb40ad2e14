"""Issue 14 part 3: federated evaluation end to end (run store, report, CLI summary),
checked against a direct per-client evaluation of the final model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedstrata.api import load_model, run
from fedstrata.api.components import build_dataset, trainer_factory
from fedstrata.config import FedConfig, load_config
from fedstrata.core.context import derive_rng
from fedstrata.data import client_test_split
from fedstrata.errors import ConfigError
from fedstrata.monitoring import FedEvalMetrics, RunStore
from fedstrata.torch_adapter import Task, TaskPopulation
from fedstrata.torch_adapter.holdout import HoldoutPopulation

DIM, CLIENTS = 4, 5


def model() -> nn.Module:
    return nn.Linear(DIM, 2)


def client_data(cid: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cid)
    x = (rng.standard_normal((10 + 5 * cid, DIM)) + 0.3 * cid).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0.3 * cid).astype(np.int64)


def client_test_data(cid: int) -> TensorDataset:
    x, y = client_data(cid + 50)
    return TensorDataset(torch.from_numpy(x[: 3 + cid]), torch.from_numpy(y[: 3 + cid]))


def evaluate(module: nn.Module, data: object) -> dict[str, float]:
    x, y = data.tensors if isinstance(data, TensorDataset) else map(torch.as_tensor, data)  # type: ignore[attr-defined]
    logits = module(x)
    return {
        "accuracy": float((logits.argmax(1) == y).float().mean()),
        "loss": float(nn.functional.cross_entropy(logits, y)),
        "positive_rate": float(logits.argmax(1).float().mean()),
    }


def make_task(**extra: object) -> Task:
    """A bank's task with no central test set."""
    return Task(model=model, client_data=client_data, num_clients=CLIENTS, evaluate=evaluate,
                **extra)  # type: ignore[arg-type]  # fmt: skip


def config(tmp_path: Path, *extra: str) -> FedConfig:
    return load_config(
        overrides=[
            "rounds.rounds=3", "client.batch_size=4", "client.lr=0.2", "sim.workers=0",
            f"output.dir={tmp_path}", "output.progress=false", "evaluation.every=2", *extra,
        ]
    )  # fmt: skip


def _check_against_direct(stored: FedEvalMetrics, direct: dict[int, tuple[int, dict]]) -> None:
    assert {r.client_id for r in stored.results} == set(direct)
    for r in stored.results:
        n, metrics = direct[r.client_id]
        assert r.num_examples == n
        assert r.metrics == pytest.approx(metrics, rel=1e-6)
    for name in ("accuracy", "loss"):
        values = np.array([direct[c][1][name] for c in sorted(direct)])
        weights = np.array([direct[c][0] for c in sorted(direct)], dtype=float)
        dist = stored.get(name)
        assert dist is not None
        assert dist.mean == pytest.approx(float(values @ weights / weights.sum()), rel=1e-6)
        assert dist.std == pytest.approx(float(values.std()), rel=1e-6, abs=1e-12)
        assert dist.p10 == pytest.approx(float(np.percentile(values, 10)), rel=1e-6)


def _direct(module: nn.Module, held: dict[int, object]) -> dict[int, tuple[int, dict]]:
    module.eval()
    with torch.no_grad():
        return {c: (len(data[1]) if isinstance(data, tuple) else len(data),  # type: ignore[arg-type]
                    evaluate(module, data)) for c, data in held.items()}  # fmt: skip


def test_user_task_without_central_test_set_holds_out_client_data(tmp_path: Path) -> None:
    """Issue 14 part 3 must-show: metrics in the run store and the report, and correct."""
    task = make_task()
    result = run(config(tmp_path), task=task)
    assert all(m.accuracy is None for m in result.simulation.rounds)  # no central test set
    assert result.run_dir is not None
    with RunStore.open(result.run_dir) as store:
        stored = store.fed_evals()
        summary = store.summary()
    assert [e.round_idx for e in stored] == [1, 2]
    assert stored == [
        FedEvalMetrics(e.round_idx, e.clients_selected, e.clients_failed, e.wall_s,
                       e.results, tuple(sorted(e.distributions, key=lambda d: d.metric)))
        for e in result.simulation.fed_evals
    ]  # fmt: skip
    split = HoldoutPopulation(TaskPopulation(task), task, 0.2, seed=0)
    held = {c: split.held_out.client(c).source for c in range(CLIENTS)}
    assert [len(h[1]) for h in held.values()] == [2, 3, 4, 5, 6]  # floor(0.2 * n)
    np.testing.assert_array_equal(split.client_sizes(), [8, 12, 16, 20, 24])
    direct = _direct(load_model(result.run_dir, task), held)
    _check_against_direct(stored[-1], direct)
    assert summary["final_fed_eval"]["accuracy_mean"] == stored[-1].get("accuracy").mean  # type: ignore[union-attr]
    html = (result.run_dir / "report.html").read_text()
    assert "<h2>Federated evaluation</h2>" in html
    assert "positive_rate" in html


def test_user_task_with_its_own_client_test_data(tmp_path: Path) -> None:
    """The task's client_test_data is what each client evaluates on; training keeps all."""
    task = make_task(client_test_data=client_test_data)
    result = run(config(tmp_path, "evaluation.clients=3"), task=task)
    last = result.simulation.fed_evals[-1]
    assert last.clients_selected == 3
    held = {r.client_id: client_test_data(r.client_id) for r in last.results}
    _check_against_direct(last, _direct(load_model(result.run_dir, task), held))  # type: ignore[arg-type]
    assert result.simulation.rounds[0].clients_completed == CLIENTS


def test_holdout_zero_evaluates_each_client_on_its_training_data(tmp_path: Path) -> None:
    task = make_task()
    result = run(config(tmp_path, "evaluation.holdout=0", "output.run_store=false"), task=task)
    last = result.simulation.fed_evals[-1]
    assert [r.num_examples for r in last.results] == [10 + 5 * c for c in range(CLIENTS)]
    assert result.simulation.rounds[0].clients_completed == CLIENTS


def test_builtin_preset_federated_evaluation(tmp_path: Path) -> None:
    """Issue 14 part 3 must-show for a built-in preset (quickstart, made tiny)."""
    cfg = load_config(
        preset="quickstart",
        overrides=[
            "rounds.rounds=2", "data.num_clients=12", "rounds.clients_per_round=6",
            "evaluation.every=1", "evaluation.clients=8", "model.hidden=16", "sim.workers=0",
            f"output.dir={tmp_path}", "output.progress=false",
        ],
    )  # fmt: skip
    result = run(cfg)
    assert result.run_dir is not None
    with RunStore.open(result.run_dir) as store:
        stored = store.fed_evals()
        _, params = store.load_model()
    assert [e.round_idx for e in stored] == [0, 1]
    assert stored[-1].clients_selected == 8
    train, held = client_test_split(build_dataset(cfg.data), 0.2, derive_rng(0, 0, -1, "holdout"))
    trainer = trainer_factory(cfg, train)()
    direct = {}
    for r in stored[-1].results:
        ev = trainer.evaluate(params, held.client(r.client_id))
        direct[r.client_id] = (ev.num_examples, {"accuracy": ev.accuracy, "loss": ev.loss})
    _check_against_direct(stored[-1], direct)
    assert "<h2>Federated evaluation</h2>" in (result.run_dir / "report.html").read_text()
    assert result.simulation.rounds[0].accuracy is not None  # the central test set stays


@pytest.mark.parametrize(
    "mode",
    [
        ["rounds.clients_per_round=null", "topology.mode=auto", "topology.edge_size=3",
         "topology.edge_min=2", "topology.edge_max=4", "topology.region_size=2",
         "topology.region_min=1", "topology.region_max=2"],
        ["scheduling.async.enabled=true", "scheduling.async.concurrency=3",
         "scheduling.async.buffer_size=2", "scheduling.async.server_updates=3"],
    ],
    ids=["hierarchy", "async"],
)  # fmt: skip
def test_hierarchical_and_async_simulations_evaluate_too(tmp_path: Path, mode) -> None:
    result = run(config(tmp_path, "output.run_store=false", *mode), task=make_task())
    assert [e.round_idx for e in result.simulation.fed_evals] == [1, 2]
    assert all(len(e.results) == CLIENTS for e in result.simulation.fed_evals)


def test_forked_workers_evaluate_the_same(tmp_path: Path) -> None:
    task = make_task()
    a = run(config(tmp_path, "output.run_store=false"), task=task)
    b = run(config(tmp_path, "output.run_store=false", "sim.workers=1"), task=task)
    assert b.workers == 1
    results = [[e.results for e in r.simulation.fed_evals] for r in (a, b)]
    assert results[0] == results[1]


def test_requests_that_cannot_be_honoured_are_refused(tmp_path: Path) -> None:
    """Asked for where it is not supported: refused with a reason, never ignored."""
    with pytest.raises(ConfigError, match="privacy accountant"):
        config(tmp_path, "privacy.mechanism=central")
    with pytest.raises(ConfigError, match=r"rounds\.client_eval was replaced"):
        load_config(overrides=["rounds.client_eval=5"])
    with pytest.raises(ConfigError, match=r"at most one of evaluation\.clients"):
        config(tmp_path, "evaluation.clients=2", "evaluation.fraction=0.5")
    with pytest.raises(ConfigError, match=r"exceeds data\.num_clients"):
        load_config(overrides=["evaluation.every=1", "evaluation.clients=500"])
    own = make_task(client_test_data=client_test_data)
    with pytest.raises(ConfigError, match="brings its own client_test_data"):
        run(config(tmp_path, "evaluation.holdout=0.3"), task=own)

    def loader(cid: int) -> DataLoader:
        return DataLoader(TensorDataset(*map(torch.as_tensor, client_data(cid))), batch_size=4)

    with pytest.raises(ConfigError, match="cannot split"):
        run(config(tmp_path), task=make_task().__class__(
            model=model, client_data=loader, num_clients=CLIENTS))  # fmt: skip


def test_cli_summary_shows_the_last_federated_mean_and_worst_tenth(tmp_path: Path) -> None:
    from fedstrata.cli.commands import _fed_eval_rows

    result = run(config(tmp_path, "output.run_store=false"), task=make_task())
    rows = dict(_fed_eval_rows(result.simulation.fed_evals))
    acc = result.simulation.fed_evals[-1].get("accuracy")
    assert acc is not None
    assert rows["federated accuracy"].startswith(
        f"mean {acc.mean:.4f}, worst 10% {acc.worst10:.4f} (round 2, {CLIENTS} clients)"
    )
