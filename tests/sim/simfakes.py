"""Fakes for simulator tests: a NumPy trainer and a tiny client source (no torch).

A module of its own (not ``conftest``) so that test files import it by a unique name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedstrata.core import ArrayDataset, EvalResult, ParamSpec, TrainResult


@dataclass(frozen=True)
class FakeData:
    """Client i holds 3 + i % 4 examples whose features are ~ i."""

    num_clients: int = 12

    def client(self, client_id: int) -> ArrayDataset:
        if not 0 <= client_id < self.num_clients:
            raise IndexError(client_id)
        n = 3 + client_id % 4
        rng = np.random.default_rng(client_id)
        x = (client_id + rng.standard_normal((n, 4))).astype(np.float32)
        return ArrayDataset(x, np.zeros(n, dtype=np.int64))

    def client_sizes(self) -> np.ndarray:
        return np.array([3 + i % 4 for i in range(self.num_clients)])


class FakeTrainer:
    """Moves params toward the client's feature mean, with client-seeded noise."""

    def __init__(self, nan_clients=(), raise_clients=()) -> None:
        self.nan_clients, self.raise_clients = set(nan_clients), set(raise_clients)

    @property
    def spec(self) -> ParamSpec:
        return ParamSpec(("w",), ((4,),))

    @property
    def flops_per_example(self) -> float:
        return 1e6

    def initial_params(self, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal(4).astype(np.float32)

    def train(self, params, data, plan, ctx, out) -> TrainResult:
        if ctx.client_id in self.raise_clients:
            raise RuntimeError("device ran out of memory")
        target = data.x.mean(axis=0)
        noise = ctx.rng("noise").standard_normal(4).astype(np.float32) * np.float32(0.01)
        out[:] = np.float32(plan.lr) * (target - params) + noise
        if ctx.client_id in self.nan_clients:
            out[1] = np.nan
        return TrainResult(len(data), 1, {"train_loss": float(np.abs(out).sum())})

    def evaluate(self, params, data) -> EvalResult:
        loss = float(np.square(params - data.x.mean(axis=0)).mean())
        return EvalResult(loss=loss, accuracy=1.0 / (1.0 + loss), num_examples=len(data))


@dataclass(frozen=True)
class FakeFactory:
    nan_clients: tuple[int, ...] = ()
    raise_clients: tuple[int, ...] = ()

    def __call__(self) -> FakeTrainer:
        return FakeTrainer(self.nan_clients, self.raise_clients)
