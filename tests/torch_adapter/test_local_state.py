"""Issue 14 part 1 (FedBN): a client's local buffers around its turn in a worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedstrata.core import LocalPlan
from fedstrata.core.state import DiskStateStore, MemoryStateStore
from fedstrata.errors import CheckpointCorrupt
from fedstrata.sim.tasks import ClientJob, ClientTask, evaluate_client, run_client
from fedstrata.torch_adapter import Task, TorchTrainer

DIM = 3
PLAN = LocalPlan(batch_size=8, lr=0.01, epochs=1)


def model() -> nn.Module:
    return nn.Sequential(nn.BatchNorm1d(DIM), nn.Linear(DIM, 2))


class Source:
    """Client ``c``'s features are centred on ``10 * c``."""

    def client(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(client_id)
        x = (rng.standard_normal((8, DIM)) + 10 * client_id).astype(np.float32)
        return x, np.zeros(8, np.int64)


def running_mean(module: nn.Module, data: object) -> dict[str, float]:
    return {"rm": float(module[0].running_mean[0])}  # type: ignore[index]


def _setup(store: object) -> tuple[TorchTrainer, ClientJob]:
    trainer = TorchTrainer(Task(model=model, local_buffers=("0",), evaluate=running_mean))
    job = ClientJob(lambda: trainer, Source(), 1, eval_data=Source(), client_state=store)  # type: ignore[arg-type]
    return trainer, job


def _train(trainer: TorchTrainer, job: ClientJob, cid: int, round_idx: int) -> None:
    params = trainer.initial_params(0)
    run_client(trainer, job, ClientTask(0, cid, round_idx, PLAN), params, np.empty_like(params))


def test_each_client_trains_and_evaluates_on_its_own_buffers() -> None:
    """Loaded before the turn, saved after training, initial values afterwards."""
    store = MemoryStateStore()
    trainer, job = _setup(store)
    bn = trainer.model[0]  # type: ignore[index]
    for round_idx in range(2):
        for cid in (1, 2):
            _train(trainer, job, cid, round_idx)
            assert torch.equal(bn.running_mean, torch.zeros(DIM))  # reset after the turn
    saved = {c: store.get(c, "local_buffer_0") for c in (1, 2)}
    assert saved[1] is not None
    assert saved[2] is not None
    # two EMA steps (momentum 0.1) towards each client's own mean: 0.19 * mean
    np.testing.assert_allclose(saved[1], 0.19 * Source().client(1)[0].mean(0), rtol=1e-4)
    np.testing.assert_allclose(saved[2], 0.19 * Source().client(2)[0].mean(0), rtol=1e-4)
    assert int(np.asarray(store.get(1, "local_buffer_2"))) == 2  # num_batches_tracked
    params = trainer.initial_params(0)
    fed = evaluate_client(trainer, job, ClientTask(0, 2, 2, PLAN, evaluate=True), params)
    assert fed[3]["rm"] == pytest.approx(float(saved[2][0]))
    assert trainer.evaluate(params, Source().client(2)).metrics["rm"] == 0.0  # central: initial


def test_no_store_or_no_local_buffers_means_no_client_state() -> None:
    """Built-in style models have no client state; a job without a store leaves the
    module's buffers to the process (no per-client I/O)."""
    assert TorchTrainer(Task(model=model)).client_state is None
    trainer, job = _setup(None)
    _train(trainer, job, 1, 0)
    assert float(trainer.model[0].running_mean[0]) != 0.0  # type: ignore[index]


def test_a_saved_buffer_of_another_shape_is_corrupt(tmp_path: object) -> None:
    """A store from another model is refused with the buffer's name."""
    store = DiskStateStore(tmp_path)  # type: ignore[arg-type]
    store.put(1, "local_buffer_0", np.zeros(DIM + 1, np.float32))
    trainer, job = _setup(store)
    with pytest.raises(CheckpointCorrupt, match=r"0\.running_mean"):
        _train(trainer, job, 1, 0)
