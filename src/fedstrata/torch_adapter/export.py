"""Models out in the user's format: a PyTorch ``state_dict`` (Issue 14 part 7).

A run directory holds ``model.npz`` (the flat vector, fedstrata's own format) and
``model.pt``: ``torch.save`` of the task module's ``state_dict()`` with the final
global weights, so ``module.load_state_dict(torch.load("model.pt"))`` works on the
user's own ``nn.Module``. Local buffers (see :mod:`fedstrata.torch_adapter.task`)
hold the values the model factory gave them. :func:`load_model` is the one-liner.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from fedstrata.core.params import FloatVector
from fedstrata.errors import CheckpointError, TaskError
from fedstrata.torch_adapter.binding import FlatModel, build_module
from fedstrata.torch_adapter.task import Task

__all__ = ["MODEL_PT", "load_model", "save_state_dict", "state_dict"]

MODEL_PT = "model.pt"


def _module_with(task: Task, params: FloatVector) -> nn.Module:
    bound = FlatModel.bind(build_module(task.model, 0), task.local_buffers)
    bound.spec.check(params, "model params")
    bound.flat_np[:] = params
    return bound.module


def state_dict(task: Task, params: FloatVector) -> dict[str, torch.Tensor]:
    """The task module's ``state_dict`` holding the global model ``params`` (copies).

    Raises:
        ShapeError: ``params`` does not fit the task's model.
        TaskError: the model factory failed.
    """
    module = _module_with(task, params)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def save_state_dict(task: Task, params: FloatVector, path: Path) -> None:
    """Write :func:`state_dict` to ``path`` atomically (temporary file, then rename).

    Raises:
        ShapeError, TaskError: as :func:`state_dict`.
        CheckpointError: the file could not be written.
    """
    tensors = state_dict(task, params)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(tensors, fh)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {path}: {exc}") from exc


def load_model(run_dir: Path | str, task: Task) -> nn.Module:
    """The task's module (``task.model()``) with the run's final weights loaded.

    Raises:
        CheckpointError: ``run_dir`` has no readable ``model.pt``.
        TaskError: the model factory failed, or its module does not accept the saved
            weights (names or shapes differ; the message lists them).
    """
    path = Path(run_dir) / MODEL_PT
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    module = build_module(task.model, 0)
    try:
        module.load_state_dict(saved)
    except RuntimeError as exc:
        raise TaskError(f"the task's model does not accept the weights in {path}: {exc}") from exc
    return module
