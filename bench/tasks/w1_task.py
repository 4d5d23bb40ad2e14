"""Workload W1 (../../shared/BASELINES.md) written as a user would: plain PyTorch.

Two tasks on the same data and model: ``w1`` trains with a standard
``torch.optim.SGD`` (``Task.optimizer``), ``w1_custom_loop`` with the user's own
training function (the zero_grad/forward/backward/step loop written out, plus
gradient clipping at a norm it never reaches, so the arithmetic stays W1's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fedstrata.torch_adapter import LocalTraining, Task

_CACHE: dict[str, Any] = {}


def _digits() -> dict[str, Any]:
    """W1's data: digits / 16, stratified 80/20 split, 200 label-sorted shards."""
    if not _CACHE:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x = (x / 16).astype(np.float32)
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
        shards = np.array_split(np.argsort(ytr, kind="stable"), 200)
        perm = np.random.default_rng(0).permutation(200)
        _CACHE["clients"] = [
            np.concatenate([shards[perm[2 * c]], shards[perm[2 * c + 1]]]) for c in range(100)
        ]
        _CACHE["train"] = (xtr, ytr.astype(np.int64))
        _CACHE["test"] = (xte, yte.astype(np.int64))
    return _CACHE


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def client_data(cid: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _digits()["train"]
    idx = _digits()["clients"][cid]
    return x[idx], y[idx]


def test_data() -> tuple[np.ndarray, np.ndarray]:
    return _digits()["test"]


def sgd(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05)


def train(model: nn.Module, data: object, ctx: LocalTraining) -> dict[str, float]:
    total, n = 0.0, 0
    for x, y in ctx.batches():
        ctx.optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e6)
        ctx.optimizer.step()
        total, n = total + loss.item() * len(y), n + len(y)
    return {"train_loss": total / n}


w1 = Task(model=model, client_data=client_data, num_clients=100, test_data=test_data,
          optimizer=sgd, name="w1")  # fmt: skip
w1_custom_loop = Task(model=model, client_data=client_data, num_clients=100,
                      test_data=test_data, optimizer=sgd, train=train, name="w1-loop")  # fmt: skip
