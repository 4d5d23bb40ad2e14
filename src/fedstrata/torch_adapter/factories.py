"""Picklable recipes for :class:`~fedstrata.torch_adapter.trainer.TorchTrainer`.

They are called inside worker processes (forked workers inherit them; Ray actors
unpickle them): :class:`TorchTrainerFactory` for a built-in model, whose task
:func:`builtin_task` builds; :class:`TaskTrainerFactory` for a user's task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import torch
from torch import nn

from fedstrata.errors import ConfigError
from fedstrata.torch_adapter.models import ModelKind, build_model
from fedstrata.torch_adapter.precision import Precision
from fedstrata.torch_adapter.probe import SgdSettings
from fedstrata.torch_adapter.task import Task
from fedstrata.torch_adapter.trainer import ShuffleSeeding, TorchTrainer

__all__ = ["TaskTrainerFactory", "TorchTrainerFactory", "builtin_task"]

_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True)
class _BuiltinModel:
    """Picklable factory of a built-in model on the CPU (PyTorch's default init)."""

    kind: ModelKind
    input_shape: tuple[int, ...]
    num_classes: int
    hidden: int

    def __call__(self) -> nn.Module:
        # Built on the CPU by the constructors (PyTorch's default initialisation from
        # the generator build_module seeded): materialising a meta model instead
        # would load torch's meta kernels, about a second per process.
        return build_model(self.kind, self.input_shape, self.num_classes, self.hidden, "cpu")


def builtin_task(
    kind: ModelKind | str, input_shape: tuple[int, ...], num_classes: int, hidden: int = 128
) -> Task:
    """The built-in model ``kind`` as a task (its data come from the config).

    Raises:
        ConfigError: unknown kind or invalid sizes.
    """
    shape = tuple(int(d) for d in input_shape)
    build_model(kind, shape, num_classes, hidden)  # validates
    return Task(model=_BuiltinModel(ModelKind(kind), shape, num_classes, hidden), name=str(kind))


def _enum(cls: type[_E], value: str, field: str) -> _E:
    try:
        return cls(value)
    except ValueError as exc:
        allowed = ", ".join(m.value for m in cls)
        raise ConfigError(
            f"TorchTrainerFactory.{field} must be one of {allowed}; got {value!r}"
        ) from exc


@dataclass(frozen=True)
class TorchTrainerFactory:
    """Picklable recipe for a :class:`TorchTrainer`, called inside worker processes.

    Attributes:
        model: model architecture (a :class:`ModelKind` or its value; stored as the enum).
        input_shape: shape of one example (``x.shape[1:]``).
        num_classes: number of classes.
        hidden: hidden width (mlp, cnn).
        torch_threads: intra-op threads set with ``torch.set_num_threads`` when the
            factory is called (a per-process setting); ``None`` leaves it alone.
        shuffle_seeding: how each client's shuffle generator is seeded.
        precision: ``client.precision`` (``auto`` is resolved in each worker).
    """

    model: ModelKind | str
    input_shape: tuple[int, ...]
    num_classes: int
    hidden: int = 128
    torch_threads: int | None = 1
    shuffle_seeding: ShuffleSeeding | str = ShuffleSeeding.DERIVED
    precision: Precision | str = Precision.FP32

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", _enum(ModelKind, self.model, "model"))
        object.__setattr__(self, "precision", _enum(Precision, self.precision, "precision"))
        seeding = _enum(ShuffleSeeding, self.shuffle_seeding, "shuffle_seeding")
        object.__setattr__(self, "shuffle_seeding", seeding)
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(
                f"TorchTrainerFactory.torch_threads must be >= 1 or None, got {self.torch_threads}"
            )
        build_model(self.model, self.input_shape, self.num_classes, self.hidden)  # validates

    def __call__(self) -> TorchTrainer:
        """Set the thread count (if asked) and build a trainer."""
        _set_threads(self.torch_threads)
        task = builtin_task(self.model, self.input_shape, self.num_classes, self.hidden)
        return TorchTrainer(
            task,
            self.shuffle_seeding,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            precision=self.precision,
        )


def _set_threads(threads: int | None) -> None:
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@dataclass(frozen=True, eq=False)
class TaskTrainerFactory:
    """Recipe for a :class:`TorchTrainer` of a user's task, called in worker processes.

    Attributes:
        task: the task (inherited by forked workers).
        torch_threads: intra-op threads per process (``None`` leaves it alone).
        shuffle_seeding: how each client's shuffle generator is seeded.
        expected: the global model's ``(name, shape)`` list, checked in each worker.
        example: returns one input example (a batch of one) to count FLOPs with.
        sgd: the task's optimizer is this plain SGD: train on the fast path.
        precision: ``client.precision`` (``auto`` is resolved in each worker).
    """

    task: Task
    torch_threads: int | None = 1
    shuffle_seeding: ShuffleSeeding | str = ShuffleSeeding.DERIVED
    expected: tuple[tuple[str, tuple[int, ...]], ...] | None = None
    example: Callable[[], torch.Tensor] | None = None
    sgd: SgdSettings | None = None
    precision: Precision | str = Precision.FP32

    def __post_init__(self) -> None:
        seeding = _enum(ShuffleSeeding, self.shuffle_seeding, "shuffle_seeding")
        object.__setattr__(self, "shuffle_seeding", seeding)
        object.__setattr__(self, "precision", _enum(Precision, self.precision, "precision"))
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(
                f"TaskTrainerFactory.torch_threads must be >= 1 or None, got {self.torch_threads}"
            )

    def __call__(self) -> TorchTrainer:
        """Set the thread count (if asked) and build a trainer for the task."""
        _set_threads(self.torch_threads)
        return TorchTrainer(
            self.task,
            self.shuffle_seeding,
            example=self.example,
            expected=self.expected,
            sgd=self.sgd,
            precision=self.precision,
        )
