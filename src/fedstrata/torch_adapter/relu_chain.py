"""Hand-written forward and backward of a Linear-ReLU chain under cross-entropy.

The built-in ``logreg`` and ``mlp`` models (and any task whose module is the same
plain chain) are ``[Flatten(1)] -> Linear -> (ReLU -> Linear)*``. On a batch of 8
the autograd engine's own bookkeeping costs about twice the arithmetic of such a
model (measured with torch 2.13 on one thread: forward, loss and backward of the
64-128-10 MLP 133 us through autograd, 55 us here); a W1 client takes two such
steps, so the engine's overhead was a third of a round.

:class:`ReluChain` calls the very ATen kernels autograd would call, on tensors of the
same shapes and strides, so every loss and gradient is bit for bit the one
``loss.backward()`` produces (the tests compare the bits on random batches):

* forward: ``addmm(b, a, W.t())`` per Linear (``F.linear`` on a 2-D input) and
  ``relu`` (fused below the top: ``_addmm_activation`` is ``addmm`` then ``relu_``
  on its result), ``log_softmax(z, 1)`` and ``nll_loss_forward`` (mean, ignore
  index -100), which is what ``cross_entropy`` decomposes into;
* backward: ``nll_loss_backward``, ``_log_softmax_backward_data``; per Linear the
  bias gradient ``g.sum(0, keepdim=True)`` (autograd's ``sum_to``), the weight
  gradient ``g.t().mm(a)`` (``mm_mat2_backward`` for the column-major ``W.t()``)
  and, below the top layer, ``threshold_backward(g.mm(W), a, 0)`` (ReLU's
  derivative on its output);
* each gradient is added into the parameter's ``.grad`` (``grad += new``), as
  autograd's ``AccumulateGrad`` does.

A chain with a hidden width of 1 or a parameter used twice is not matched (autograd
would take another branch, or sum the two gradients first), and batches that are not
float32 inputs with int64 class labels, or that run under autocast or anomaly
detection, go through autograd.
"""

from __future__ import annotations

from typing import final

import torch
from torch import nn

__all__ = ["ReluChain", "relu_chain"]

_MEAN = 1  # at::Reduction::Mean
_IGNORE_INDEX = -100  # cross_entropy's default
_nll_forward = torch.ops.aten.nll_loss_forward.default
_nll_backward = torch.ops.aten.nll_loss_backward.default
_threshold_backward = torch.ops.aten.threshold_backward.default

Layer = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@final
class ReluChain:
    """Loss and gradients of a Linear-ReLU chain without autograd (see module docstring).

    Args:
        layers: per Linear, bottom up: ``(weight, bias, weight.grad, bias.grad)``.
        flatten: the chain starts with ``Flatten(1)``.
    """

    def __init__(self, layers: list[Layer], flatten: bool) -> None:
        # per layer, made once: W, W.t() (what F.linear hands addmm), b, W.grad, and
        # b.grad as a row (the shape of the keepdim sum added into it)
        self._layers = [(w, w.t(), b, gw, gb.view(1, -1)) for w, b, gw, gb in layers]
        self._flatten = flatten
        self._one = torch.ones(())

    def accepts(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Whether this batch is one the chain computes exactly as autograd would."""
        return (
            x.dtype == torch.float32
            and y.dtype == torch.int64
            and y.dim() == 1
            and (x.dim() == 2 or (self._flatten and x.dim() > 2))
            and not torch.is_autocast_enabled("cpu")
            and not torch.is_anomaly_enabled()  # its NaN checks live in the engine
        )

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy of the batch; adds its gradients into the ``.grad``s."""
        with torch.no_grad():
            acts = [x.flatten(1) if self._flatten else x]
            for _, wt, b, _, _ in self._layers[:-1]:  # addmm, then relu in place
                acts.append(torch._addmm_activation(b, acts[-1], wt))
            _, wt, b, _, _ = self._layers[-1]
            logp = torch.log_softmax(torch.addmm(b, acts[-1], wt), 1)
            loss, total = _nll_forward(logp, y, None, _MEAN, _IGNORE_INDEX)
            g = _nll_backward(self._one, logp, y, None, _MEAN, _IGNORE_INDEX, total)
            g = torch._log_softmax_backward_data(g, logp, 1, torch.float32)
            for i in range(len(self._layers) - 1, -1, -1):
                w, _, _, w_grad, b_row = self._layers[i]
                b_row.add_(g.sum(0, keepdim=True))
                w_grad.add_(g.t().mm(acts[i]))
                if i:
                    g = _threshold_backward(g.mm(w), acts[i], 0)
        loss_tensor: torch.Tensor = loss
        return loss_tensor


def relu_chain(module: nn.Module) -> ReluChain | None:
    """A :class:`ReluChain` for ``module`` if it is exactly such a chain, else None.

    Matches a plain ``nn.Sequential`` (no subclasses, no hooks) of an optional
    ``Flatten(1)``, then ``Linear`` layers with biases separated by ``ReLU``; every
    parameter float32, contiguous, trainable, used once, with a bound ``.grad``.
    """
    if type(module) is not nn.Sequential or _hooked(module):
        return None
    mods = list(module.children())
    head = mods[0] if mods else None
    flatten = isinstance(head, nn.Flatten) and type(head) is nn.Flatten
    if isinstance(head, nn.Flatten):
        if not flatten or (head.start_dim, head.end_dim) != (1, -1) or _hooked(head):
            return None
        mods.pop(0)
    linears, relus = mods[0::2], mods[1::2]
    if not linears or len(linears) != len(relus) + 1:
        return None
    if any(type(m) is not nn.ReLU or _hooked(m) for m in relus):
        return None
    layers = [_layer(m, top=i == len(linears) - 1) for i, m in enumerate(linears)]
    found = [layer for layer in layers if layer is not None]
    if len(found) != len(layers) or len({id(t) for layer in found for t in layer[:2]}) != (
        2 * len(found)
    ):
        return None
    return ReluChain(found, flatten)


def _layer(module: nn.Module, top: bool) -> Layer | None:
    if type(module) is not nn.Linear or _hooked(module) or module.bias is None:
        return None
    if not top and module.out_features < 2:  # autograd reads a [n, 1] input another way
        return None
    w, b = module.weight, module.bias
    w_grad, b_grad = w.grad, b.grad
    if w_grad is None or b_grad is None or not (_plain(w) and _plain(b)):
        return None
    return w, b, w_grad, b_grad


def _plain(p: torch.Tensor) -> bool:
    """A float32, contiguous, trainable parameter without gradient hooks."""
    hooked = p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None)
    return p.dtype == torch.float32 and p.requires_grad and p.is_contiguous() and not hooked


def _hooked(module: nn.Module) -> bool:
    """The module, or every module (global hooks), has forward or backward hooks."""
    hooks = (
        module._forward_hooks,
        module._forward_pre_hooks,
        module._backward_hooks,
        module._backward_pre_hooks,
        nn.modules.module._global_forward_hooks,
        nn.modules.module._global_forward_pre_hooks,
        nn.modules.module._global_backward_hooks,
        nn.modules.module._global_backward_pre_hooks,
    )
    return any(len(h) for h in hooks)
