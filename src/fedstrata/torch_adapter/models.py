"""Model builders for the torch adapter, with generator-driven initialisation.

Three kinds (:class:`ModelKind`):

* ``logreg`` — multinomial logistic regression, ``Linear(in, classes)``;
* ``mlp`` — ``Linear(in, hidden) -> ReLU -> Linear(hidden, classes)``;
* ``cnn`` — a small CNN for single-channel square images (8x8 digits, 28x28
  MNIST-like): ``Conv(1,16,3,pad 1) -> ReLU -> MaxPool 2 -> Conv(16,32,3,pad 1) ->
  ReLU -> MaxPool 2 -> Linear(32*(s/4)^2, hidden) -> ReLU -> Linear(hidden, classes)``.

:func:`build_model` builds on the ``meta`` device (no memory, no random draws: to
validate sizes and count MACs) or, for training, on the CPU, where the built-in task
(:func:`fedstrata.torch_adapter.builtin_task`) calls it under
``torch.manual_seed(seed)`` like any task's model factory. :func:`init_params_`
reproduces PyTorch's default ``nn.Linear`` / ``nn.Conv2d`` initialisation
(``kaiming_uniform_(a=sqrt(5))`` on weights, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
on biases) in module order, but draws from an explicit ``torch.Generator``: the
result equals ``torch.manual_seed(seed)`` followed by constructing the model the
usual way, without touching the global random state.
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
from torch import nn

from fedstrata.errors import ConfigError
from fedstrata.torch_adapter.flops import count_training

__all__ = ["ModelKind", "build_model", "count_macs", "forward_macs", "init_params_"]


class ModelKind(StrEnum):
    """Architectures the adapter can build."""

    LOGREG = "logreg"
    MLP = "mlp"
    CNN = "cnn"


def _image_side(input_shape: tuple[int, ...]) -> int:
    """Side of the square single-channel image an input shape describes."""
    squeezed = tuple(d for d in input_shape if d != 1)
    numel = math.prod(input_shape)
    side = math.isqrt(numel)
    ok_layout = len(squeezed) <= 1 or (len(squeezed) == 2 and squeezed[0] == squeezed[1])
    if side * side != numel or side % 4 or not ok_layout:
        raise ConfigError(
            f"cnn: input_shape {input_shape} is not a single-channel square image whose "
            "side is a multiple of 4 (e.g. (64,), (8, 8), (1, 28, 28))"
        )
    return side


def _cnn(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Sequential:
    side = _image_side(input_shape)
    head: list[nn.Module] = [nn.Flatten(1)] if len(input_shape) > 1 else []
    return nn.Sequential(
        *head,
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(1),
        nn.Linear(32 * (side // 4) ** 2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _check_build(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> None:
    if not input_shape or any(d < 1 for d in input_shape):
        raise ConfigError(f"input_shape must be non-empty with dims >= 1, got {input_shape}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if hidden < 1:
        raise ConfigError(f"hidden must be >= 1, got {hidden}")


def build_model(
    kind: ModelKind | str,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: int = 128,
    device: str = "meta",
) -> nn.Sequential:
    """Build the model on ``device``: uninitialised on ``meta`` (the default), else
    initialised by the layers' constructors from the global generator.

    Args:
        kind: ``logreg``, ``mlp`` or ``cnn``.
        input_shape: shape of one example as stored in the dataset (``x.shape[1:]``).
        num_classes: number of output logits.
        hidden: width of the hidden layer (``mlp``, ``cnn``).
        device: ``meta`` or ``cpu``.

    Raises:
        ConfigError: unknown kind or invalid sizes.
    """
    try:
        kind = ModelKind(kind)
    except ValueError as exc:
        raise ConfigError(f"model kind must be logreg, mlp or cnn; got {kind!r}") from exc
    _check_build(input_shape, num_classes, hidden)
    flat_in = math.prod(input_shape)
    head: list[nn.Module] = [nn.Flatten(1)] if len(input_shape) > 1 else []
    with torch.device(device):
        if kind is ModelKind.LOGREG:
            return nn.Sequential(*head, nn.Linear(flat_in, num_classes))
        if kind is ModelKind.MLP:
            return nn.Sequential(
                *head, nn.Linear(flat_in, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
            )
        return _cnn(input_shape, num_classes, hidden)


def init_params_(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Linear/Conv2d initialisation, drawn from ``generator``.

    Modules are visited in registration order, weight before bias, exactly as their
    constructors would draw from the global generator.

    Raises:
        ConfigError: the model holds a parametrised module other than Linear/Conv2d.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    fan_in = math.prod(module.weight.shape[1:])
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif any(True for _ in module.parameters(recurse=False)):
                raise ConfigError(f"init_params_: cannot initialise {type(module).__name__}")


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass for one example (see :func:`count_macs`).

    Runs the model once on one zero example (no compute and no memory when the model
    is on the ``meta`` device) to learn the layers' output shapes.
    """
    return count_macs(model, torch.zeros((1, *input_shape), device=_device_of(model)))


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Forward multiply-accumulates per example of ``example`` (a batch): Linear,
    convolution and multi-head attention layers, counted by forward hooks
    (:func:`fedstrata.torch_adapter.flops.count_training`); any module, any input dtype."""
    return count_training(model, example).forward_macs


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
