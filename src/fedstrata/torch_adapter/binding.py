"""A user's module whose global state lives in ONE flat float32 vector.

:func:`bind_flat` replaces every parameter and every aggregated buffer of a module
by a view into one flat tensor that shares memory with a NumPy vector
(``torch.from_numpy``); trainable parameters' ``.grad`` become views into one flat
gradient. Layout: trainable parameters first (so the fast SGD path works on one
prefix), then frozen parameters, then aggregated buffers. A parameter shared by
several modules (weight tying) appears once and stays shared.

Which state is global (Issue 14 part 1): all parameters and every floating-point
buffer not named in the task's ``local_buffers``; integer buffers and the named
ones stay local to the worker's module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import final

import numpy as np
import torch
from torch import nn

from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.usercode import describe
from fedstrata.errors import TaskError

__all__ = [
    "FlatModel",
    "build_module",
    "global_entries",
    "is_local",
    "layout_mismatch",
    "shapes_of",
]


def build_module(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``torch.manual_seed(seed); factory()`` without changing the global generator.

    Raises:
        TaskError: the factory raised or returned something that is not a Module.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            module = factory()
        except Exception as exc:
            raise TaskError(
                f"model factory {describe(factory)} raised {type(exc).__name__}: {exc}"
            ) from exc
    if not isinstance(module, nn.Module):
        raise TaskError(
            f"model factory {describe(factory)} returned {type(module).__name__}, "
            "not a torch.nn.Module"
        )
    return module


def is_local(name: str, local: tuple[str, ...]) -> bool:
    """Whether buffer ``name`` is named by ``local`` (an exact name or a prefix)."""
    return any(name == p or name.startswith(p + ".") for p in local)


def global_entries(
    module: nn.Module, local_buffers: tuple[str, ...]
) -> tuple[list[tuple[str, torch.Tensor]], int, int]:
    """The module's global tensors in layout order, how many are trainable, and how
    many are parameters (the rest are buffers).

    Raises:
        TaskError: a global tensor is not float32 (e.g. a float64 or half model).
    """
    params = list(module.named_parameters())
    trainable = [(n, p) for n, p in params if p.requires_grad]
    frozen = [(n, p) for n, p in params if not p.requires_grad]
    buffers = [
        (n, b)
        for n, b in module.named_buffers()
        if b.is_floating_point() and not is_local(n, local_buffers)
    ]
    entries: list[tuple[str, torch.Tensor]] = [*trainable, *frozen, *buffers]
    for name, tensor in entries:
        if tensor.dtype != torch.float32:
            raise TaskError(
                f"model parameter/buffer {name!r} is {tensor.dtype}; fedstrata trains "
                "float32 models (call .float() on the module in the factory)"
            )
    return entries, len(trainable), len(params)


@final
@dataclass(eq=False)
class FlatModel:
    """A module bound to a flat vector (see the module docstring).

    Attributes:
        module: the user's module; its global state aliases :attr:`flat_np`.
        spec: names, shapes and offsets of the global tensors.
        flat_np: the flat vector (NumPy view of :attr:`flat`).
        flat, grad: flat parameter and gradient tensors.
        trainable: length of the trainable prefix of the vector.
    """

    module: nn.Module
    spec: ParamSpec
    flat_np: FloatVector
    flat: torch.Tensor
    grad: torch.Tensor
    trainable: int

    @classmethod
    def bind(cls, module: nn.Module, local_buffers: tuple[str, ...]) -> FlatModel:
        """Move ``module``'s global tensors into one flat vector (values kept).

        Raises:
            TaskError: the module has no global tensors, or one is not float32.
        """
        entries, n_train, n_params = global_entries(module, local_buffers)
        if not entries:
            raise TaskError(f"{type(module).__name__} has no parameters to federate")
        arrays = [(n, np.empty(tuple(t.shape), np.float32)) for n, t in entries]
        spec = ParamSpec.from_arrays(arrays)
        flat_np = spec.zeros()
        flat, grad = torch.from_numpy(flat_np), torch.zeros(spec.size)
        views: dict[int, torch.Tensor] = {}
        for i, ((_, tensor), offset) in enumerate(zip(entries, spec.offsets, strict=True)):
            size = tensor.numel()
            view = flat[offset : offset + size].view(tensor.shape)
            view.copy_(tensor.detach())
            if i < n_params:
                param = nn.Parameter(view, requires_grad=tensor.requires_grad)
                if i < n_train:
                    param.grad = grad[offset : offset + size].view(tensor.shape)
                views[id(tensor)] = param
            else:
                views[id(tensor)] = view
        _rebind(module, views)
        trainable = spec.offsets[n_train] if n_train < len(entries) else spec.size
        return cls(module, spec, flat_np, flat, grad, int(trainable))

    def check_bound(self, who: str) -> None:
        """Raise if the module's global tensors no longer alias the flat vector.

        A custom training loop that replaced a layer (or a parameter of another
        shape) would otherwise train tensors fedstrata never reads back.

        Raises:
            TaskError: a tensor was replaced; names it and both shapes.
        """
        base, end = self.flat.data_ptr(), self.flat.data_ptr() + 4 * self.spec.size
        current: dict[str, torch.Tensor] = dict(self.module.named_parameters())
        current.update(dict(self.module.named_buffers()))
        for name, shape in zip(self.spec.names, self.spec.shapes, strict=True):
            t = current.get(name)
            if t is None or tuple(t.shape) != tuple(shape) or not base <= t.data_ptr() < end:
                got = "missing" if t is None else f"shape {tuple(t.shape)}"
                raise TaskError(
                    f"{who} replaced the model's {name!r} (the global model has shape "
                    f"{tuple(shape)}, the client's is {got}): every client must keep the "
                    "global model's parameters and shapes"
                )


def _rebind(module: nn.Module, views: dict[int, torch.Tensor]) -> None:
    """Point every owner of each global tensor at its flat view (shared ones too)."""
    for owner in module.modules():
        # setattr, not a dict write: modules that cache their tensors (an LSTM's
        # flat weights) refresh the cache in __setattr__.
        for attr, p in list(owner._parameters.items()):
            if p is not None and id(p) in views:
                setattr(owner, attr, views[id(p)])
        for attr, b in list(owner._buffers.items()):
            if b is not None and id(b) in views:
                setattr(owner, attr, views[id(b)])


def shapes_of(spec: ParamSpec) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``(name, shape)`` of every global tensor, to compare two processes' models."""
    return tuple(
        (n, tuple(int(d) for d in s)) for n, s in zip(spec.names, spec.shapes, strict=True)
    )


def layout_mismatch(
    expected: tuple[tuple[str, tuple[int, ...]], ...], spec: ParamSpec, factory: object
) -> str | None:
    """Why ``spec`` differs from the global model's layout, or None."""
    got = shapes_of(spec)
    if got == expected:
        return None
    for (n1, s1), (n2, s2) in zip(expected, got, strict=False):
        if (n1, s1) != (n2, s2):
            return (
                f"model factory {describe(factory)} built a different model here: "
                f"{n2!r} {s2} where the global model has {n1!r} {s1}"
            )
    return (
        f"model factory {describe(factory)} built a model with {len(got)} global "
        f"tensors here, the global model has {len(expected)}"
    )
