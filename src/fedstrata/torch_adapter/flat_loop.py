"""The fast path's local loop over a bound module's flat vectors.

:class:`FlatLoop` trains a :class:`~fedstrata.torch_adapter.binding.FlatModel` whose
gradients are views into one flat gradient tensor: zeroing them is one ``zero_()``,
and an SGD step is two to five in-place ops on the trainable prefix, with the exact
arithmetic of ``torch.optim.SGD`` (``dampening=0``, ``nesterov=False``):
``g += wd * w``; ``buf = g`` (first step) or ``buf = momentum * buf + g``;
``w += -lr * buf``. FedProx (Li et al., "Federated Optimization in Heterogeneous
Networks", MLSys 2020) adds the gradient of ``mu/2 * ||w - w_global||^2``, i.e.
``mu * (w - w_global)``. Adam uses ``torch.optim.Adam`` (built per client). A
Linear-ReLU chain computes its loss and gradient without the autograd engine
(:mod:`~fedstrata.torch_adapter.relu_chain`, same bits) under fp32.

It also owns the state a task's own optimizer shares with the fast path: the
momentum buffer (:class:`~fedstrata.torch_adapter.flatsgd.FlatSGD`) and the FedProx
anchor (:meth:`FlatLoop.prox_hook`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import final

import torch
from torch import nn

from fedstrata.core.params import FloatVector
from fedstrata.core.training import LocalPlan, OptimizerKind
from fedstrata.torch_adapter.binding import FlatModel
from fedstrata.torch_adapter.flatsgd import sgd_step_
from fedstrata.torch_adapter.loops import Batch, LossFn, checked_loss
from fedstrata.torch_adapter.precision import MixedPrecision
from fedstrata.torch_adapter.probe import SgdSettings
from fedstrata.torch_adapter.relu_chain import ReluChain

__all__ = ["FlatLoop"]


@final
class FlatLoop:
    """The flat local loop of one bound module (see the module docstring).

    Args:
        bound: the module bound to its flat parameter and gradient vectors.
        loss: the batch loss.
        chain: the module's autograd-free Linear-ReLU step, or None.
    """

    def __init__(self, bound: FlatModel, loss: LossFn, chain: ReluChain | None) -> None:
        self.bound, self.loss, self.chain = bound, loss, chain
        size = bound.trainable
        self.momentum = torch.zeros(size)
        self.global_np: FloatVector = bound.spec.zeros()
        self._global = torch.from_numpy(self.global_np)
        self._scratch = torch.zeros(size)

    def anchor(self, params: FloatVector, plan: LocalPlan) -> None:
        """Hold ``params`` as FedProx's global model when ``plan`` asks for it."""
        if plan.prox_mu > 0:
            self.global_np[:] = params

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.bound.module.parameters() if p.requires_grad]

    def run(
        self, batches: Iterator[Batch], plan: LocalPlan, origin: str, mixed: MixedPrecision
    ) -> tuple[int, float, int]:
        """The loop; returns (steps, sum of per-example loss, examples seen).

        Under fp16 a step whose gradients overflowed is skipped (still counted).
        """
        adam = None
        if plan.optimizer is OptimizerKind.ADAM:
            adam = torch.optim.Adam(self.trainable(), lr=plan.lr, weight_decay=plan.weight_decay)
        steps, applied, loss_sum, seen = 0, 0, 0.0, 0
        for x, y in batches:
            loss = self._loss_and_grad(x, y, origin, mixed)
            if mixed.step_allowed():
                self._step(plan, adam, first=applied == 0)
                applied += 1
            steps += 1
            loss_sum += loss.item() * int(y.shape[0])
            seen += int(y.shape[0])
        return steps, loss_sum, seen

    def _step(self, plan: LocalPlan, adam: torch.optim.Adam | None, first: bool) -> None:
        with torch.no_grad():
            if adam is None:
                self._sgd_step(plan, first)
            else:
                self._add_prox(plan)
                adam.step()

    def _loss_and_grad(
        self, x: torch.Tensor, y: torch.Tensor, origin: str, mixed: MixedPrecision
    ) -> torch.Tensor:
        """The batch's loss, its gradient in the flat gradient: the hand-written chain
        where it applies, else autograd (scaled under fp16)."""
        grad = self.bound.grad
        grad.zero_()
        if self.chain is not None and self.chain.accepts(x, y):
            try:
                return self.chain.loss_and_grad(x, y)
            except Exception:  # e.g. a label out of range: autograd's path names it
                grad.zero_()
        loss = checked_loss(self.bound.module, self.loss, x, y, origin)
        mixed.backward(loss, lambda: [grad])
        return loss

    def prox_hook(self, plan: LocalPlan) -> Callable[[], None] | None:
        """FedProx's gradient term for a task's own optimizer (None without FedProx)."""
        if plan.prox_mu <= 0:
            return None
        params = self.trainable()
        n = self.bound.trainable
        flat, anchor = self.bound.flat, self._global

        def prox() -> None:
            with torch.no_grad():
                delta = flat[:n] - anchor[:n]
                offset = 0
                for p in params:
                    k = p.numel()
                    if p.grad is not None:
                        p.grad.add_(delta[offset : offset + k].view_as(p), alpha=plan.prox_mu)
                    offset += k

        return prox

    def _add_prox(self, plan: LocalPlan) -> None:
        if plan.prox_mu > 0:
            n = self.bound.trainable
            torch.sub(self.bound.flat[:n], self._global[:n], out=self._scratch)
            self.bound.grad[:n].add_(self._scratch, alpha=plan.prox_mu)

    def _sgd_step(self, plan: LocalPlan, first: bool) -> None:
        """``torch.optim.SGD`` arithmetic on the trainable prefix (dampening 0, no Nesterov)."""
        self._add_prox(plan)
        n, size = self.bound.trainable, self.bound.spec.size
        weights = self.bound.flat if n == size else self.bound.flat[:n]
        grad = self.bound.grad if n == size else self.bound.grad[:n]
        settings = SgdSettings(plan.lr, plan.momentum, plan.weight_decay)
        sgd_step_(weights, grad, self.momentum, settings, first)
