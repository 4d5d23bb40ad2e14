"""SGD on one flat vector, and a stand-in for a plain ``torch.optim.SGD`` (Issue 14).

:func:`sgd_step_` is the arithmetic of ``torch.optim.SGD`` (``dampening=0``,
``nesterov=False``) on flat tensors: ``g += wd * w``; ``buf = g`` (first step) or
``buf = momentum * buf + g``; ``w += -lr * buf``. Elementwise it is the same
operations in the same order as torch's per-parameter (foreach) implementation, so the
result is bit for bit the same.

:class:`FlatSGD` is what a task's own training loop gets as ``ctx.optimizer`` when
its optimizer factory builds a plain ``torch.optim.SGD`` (see
:mod:`fedstrata.torch_adapter.probe`): ``step()``, ``zero_grad()`` and
``param_groups`` (``lr``, ``momentum``, ``weight_decay`` are read at every step, so a
loop may change them), without a ``torch.optim`` object (whose first construction
imports ``torch._dynamo``, about 2 s per process). Gradients a loop detached from the
flat gradient (``model.zero_grad()`` sets them to None) are copied back before a step.
"""

from __future__ import annotations

from typing import Any, final

import torch
from torch import nn

from fedstrata.torch_adapter.probe import SgdSettings

__all__ = ["FlatSGD", "sgd_step_"]


def sgd_step_(
    weights: torch.Tensor,
    grad: torch.Tensor,
    momentum_buf: torch.Tensor,
    settings: SgdSettings,
    first: bool,
) -> None:
    """One ``torch.optim.SGD`` step on flat tensors, in place (``grad`` is modified)."""
    step = grad
    if settings.weight_decay != 0:
        step.add_(weights, alpha=settings.weight_decay)
    if settings.momentum != 0:
        if first:
            momentum_buf.copy_(step)
        else:
            momentum_buf.mul_(settings.momentum).add_(step, alpha=1.0)
        step = momentum_buf
    weights.add_(step, alpha=-settings.lr)


@final
class FlatSGD:
    """A plain SGD over the trainable prefix of a flat vector (see the module docstring).

    Attributes:
        param_groups: one group: ``params``, ``lr``, ``momentum``, ``weight_decay``.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        weights: torch.Tensor,
        grad: torch.Tensor,
        momentum_buf: torch.Tensor,
        settings: SgdSettings,
    ) -> None:
        self.param_groups: list[dict[str, Any]] = [
            {
                "params": params,
                "lr": settings.lr,
                "momentum": settings.momentum,
                "weight_decay": settings.weight_decay,
                "dampening": 0.0,
                "nesterov": False,
                "maximize": False,
            }
        ]
        self._weights, self._grad, self._buf = weights, grad, momentum_buf
        self._views = [p.grad for p in params]
        self._first = True

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the flat gradient (gradients stay bound to it; ``set_to_none`` ignored)."""
        del set_to_none
        self._grad.zero_()
        self._rebind()

    def step(self, closure: Any = None) -> None:
        """One SGD step with the group's current ``lr``, ``momentum``, ``weight_decay``."""
        if closure is not None:
            with torch.enable_grad():
                closure()
        self._rebind()
        g = self.param_groups[0]
        settings = SgdSettings(float(g["lr"]), float(g["momentum"]), float(g["weight_decay"]))
        with torch.no_grad():
            sgd_step_(self._weights, self._grad, self._buf, settings, self._first)
        self._first = False

    def _rebind(self) -> None:
        """Copy gradients a loop detached (new tensors, or None) back into the flat one."""
        for p, view in zip(self.param_groups[0]["params"], self._views, strict=True):
            if p.grad is view or view is None:
                continue
            with torch.no_grad():
                if p.grad is None:
                    view.zero_()
                else:
                    view.copy_(p.grad)
            p.grad = view
