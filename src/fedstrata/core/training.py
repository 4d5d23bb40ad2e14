"""What the round logic needs from a local trainer, independent of any framework.

The torch adapter (``fedstrata.torch_adapter``) implements :class:`Trainer`; the
simulator and the runtime only see this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.context import ClientContext
from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.state import ClientStateStore
from fedstrata.errors import ConfigError, DataError

__all__ = [
    "ArrayDataset",
    "ClientPopulation",
    "ClientState",
    "ClientStateful",
    "EvalResult",
    "LocalData",
    "LocalPlan",
    "OptimizerKind",
    "TrainResult",
    "Trainer",
    "TrainerFactory",
]


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Features and integer labels held as NumPy arrays.

    Attributes:
        x: features, first axis indexes examples (float32).
        y: labels, shape ``(n,)`` (int64).
    """

    x: NDArray[np.float32]
    y: NDArray[np.int64]

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"ArrayDataset: x has {self.x.shape[0]} rows but y has {self.y.shape[0]}"
            )
        if self.y.ndim != 1:
            raise DataError(f"ArrayDataset: y must be 1-D, got shape {self.y.shape}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: NDArray[np.intp]) -> ArrayDataset:
        """The examples at ``index`` (a copy)."""
        return ArrayDataset(x=self.x[index], y=self.y[index])


class LocalData(Protocol):
    """A client's (or the test) data as the round logic sees it: opaque, with a size.

    :class:`ArrayDataset` is one; a user task's data (a torch ``Dataset``) is another.
    Only the trainer looks inside.
    """

    def __len__(self) -> int: ...


class ClientPopulation(Protocol):
    """The clients of a federation: their data by id, their sizes, a test set."""

    @property
    def num_clients(self) -> int: ...

    @property
    def test(self) -> LocalData | None:
        """The central test set, or None (no central evaluation)."""
        ...

    def client(self, client_id: int) -> LocalData: ...

    def client_sizes(self) -> NDArray[np.intp]:
        """Number of training examples of every client, shape ``(num_clients,)``."""
        ...


class OptimizerKind(StrEnum):
    SGD = "sgd"
    ADAM = "adam"


@dataclass(frozen=True)
class LocalPlan:
    """How a client trains in one round.

    Exactly one of ``epochs`` and ``steps`` is set. ``prox_mu > 0`` adds the FedProx
    proximal term ``mu/2 * ||w - w_global||^2`` (Li et al., MLSys 2020).
    """

    batch_size: int = 8
    lr: float = 0.05
    epochs: int | None = 1
    steps: int | None = None
    optimizer: OptimizerKind = OptimizerKind.SGD
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ConfigError("LocalPlan: set exactly one of epochs and steps")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"LocalPlan.epochs must be >= 1, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"LocalPlan.steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"LocalPlan.batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"LocalPlan.lr must be > 0, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0 or self.prox_mu < 0:
            raise ConfigError("LocalPlan: momentum, weight_decay and prox_mu must be >= 0")

    def num_samples(self, dataset_size: int) -> int:
        """Examples processed (with repetition) for a dataset of ``dataset_size``."""
        if self.epochs is not None:
            return self.epochs * dataset_size
        return int(self.steps or 0) * min(self.batch_size, max(dataset_size, 1))


@dataclass(frozen=True)
class TrainResult:
    """What local training reports besides the delta it wrote."""

    num_examples: int
    num_steps: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    """An evaluation: mean loss, accuracy (NaN when the task defines none), and any
    further named metrics of a task's own ``evaluate`` (AUC, F1, ...)."""

    loss: float
    accuracy: float
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)


class Trainer(Protocol):
    """Local training and evaluation over flat parameter vectors."""

    @property
    def spec(self) -> ParamSpec: ...

    @property
    def flops_per_example(self) -> float:
        """Forward+backward FLOPs for one example, for simulated compute time."""
        ...

    def initial_params(self, seed: int) -> FloatVector:
        """Freshly initialised parameters from ``seed`` (no global RNG)."""
        ...

    def train(
        self,
        params: FloatVector,
        data: LocalData,
        plan: LocalPlan,
        ctx: ClientContext,
        out: FloatVector,
    ) -> TrainResult:
        """Train from ``params`` on ``data`` and write ``new - params`` into ``out``."""
        ...

    def evaluate(self, params: FloatVector, data: LocalData) -> EvalResult: ...


class ClientState(Protocol):
    """A model's state kept per client (FedBN's local batch norm).

    Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
    Normalization", ICLR 2021. The simulator loads a client's state before it trains
    or evaluates, saves it after training, and resets it afterwards, so the state lives
    in a :class:`~fedstrata.core.state.ClientStateStore` every worker reaches.
    """

    def load(self, store: ClientStateStore, client_id: int) -> None:
        """Set the state to the client's saved values (first time: the initial ones)."""
        ...

    def save(self, store: ClientStateStore, client_id: int) -> None:
        """Save the current state as ``client_id``'s."""
        ...

    def reset(self) -> None:
        """Set the state back to its initial values (central evaluation sees these)."""
        ...


@runtime_checkable
class ClientStateful(Protocol):
    """A trainer with per-client state; ``client_state`` is None when it has none."""

    @property
    def client_state(self) -> ClientState | None: ...


class TrainerFactory(Protocol):
    """Builds a trainer inside a worker process; must be picklable."""

    def __call__(self) -> Trainer: ...
