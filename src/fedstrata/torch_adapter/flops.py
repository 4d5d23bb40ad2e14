"""Training FLOPs per example, counted from the module's layers (Issue 17).

The simulator's clock charges ``examples x flops_per_example / FLOP/s``;
:func:`count_training` gives that figure for any module, from one forward pass of a
batch of one under forward hooks (no dispatcher mode, so no ``torch._dynamo`` import
on a task's start-up path). For each counted layer with ``m`` forward
multiply-accumulates (MACs):

* forward: ``2m`` FLOPs;
* weight gradient: ``2m`` when the layer's weight requires grad;
* input gradient: ``2m`` only when the layer's input requires grad (a model's first
  layer computes none; the hook sees ``input.requires_grad``, so the pass runs with
  autograd enabled).

Counted layers: ``nn.Linear`` (once per position of a sequence), ``nn.Conv1d/2d/3d``
and their transposes, and ``nn.MultiheadAttention``, analytically (its projections are
not module calls): the query, key, value and output projections as above, and the
two attention matmuls ``QK^T`` and ``AV`` (``L x S x E`` MACs each, ``L`` queries,
``S`` keys, ``E`` the embedding width), whose backward computes a gradient for each
operand that requires one. ``nn.Embedding`` is a lookup (no MACs; its backward is a
scatter-add). Biases, normalisation, activations, pooling and the loss are not
counted (a few per cent of a matmul layer's work). This is the arithmetic of
``torch.utils.flop_counter.FlopCounterMode`` (which counts every matmul,
convolution and attention kernel) layer by layer; ``fedstrata model inspect`` shows
both, and the tests hold them within 10% of each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["FlopCount", "count_training"]


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one example's training step (forward and backward).

    Attributes:
        forward_macs: multiply-accumulates of the forward pass.
        training_flops: forward + backward FLOPs (see the module docstring).
    """

    forward_macs: int
    training_flops: int


def _grad(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad


def _matmul_flops(macs: int, weight_grad: bool, input_grad: bool) -> int:
    """Forward, weight-gradient and input-gradient FLOPs of a layer of ``macs`` MACs."""
    return 2 * macs * (1 + int(weight_grad) + int(input_grad))


def _conv_macs(module: nn.modules.conv._ConvNd, inp: torch.Tensor, out: torch.Tensor) -> int:
    per = module.in_channels // module.groups * math.prod(module.kernel_size)
    if module.transposed:  # each input position scatters into out_channels / groups
        per = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inp.numel() * per
    return out.numel() * per


def _layer(module: nn.Module, inp: Any, out: Any) -> tuple[int, int]:
    """(forward MACs, training FLOPs) of one Linear or convolution call (whole batch)."""
    x = inp[0] if isinstance(inp, tuple) and inp else inp
    if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
        return 0, 0
    if isinstance(module, nn.Linear):
        macs = out.numel() * module.in_features
    elif isinstance(module, nn.modules.conv._ConvNd):
        macs = _conv_macs(module, x, out)
    else:
        return 0, 0
    return macs, _matmul_flops(macs, module.weight.requires_grad, _grad(x))


def _tokens(t: torch.Tensor, width: int) -> int:
    return t.numel() // max(width, 1)


def _attention(
    module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any], batch: int
) -> tuple[int, int]:
    """(forward MACs, training FLOPs) of one ``nn.MultiheadAttention`` call."""
    names = ("query", "key", "value")
    q, k, v = (args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names))
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor)):
        return 0, 0
    if not isinstance(v, torch.Tensor):
        return 0, 0
    e = module.embed_dim
    lq, sk = _tokens(q, e), _tokens(k, module.kdim)  # all queries / keys of the batch
    if module._qkv_same_embed_dim:
        w_grad = [module.in_proj_weight.requires_grad] * 3
    else:
        w_grad = [w.requires_grad for w in (module.q_proj_weight, module.k_proj_weight,
                                            module.v_proj_weight)]  # fmt: skip
    x_grad = [_grad(q), _grad(k), _grad(v)]
    proj = (lq * e * e, sk * module.kdim * e, sk * module.vdim * e)
    flops = sum(_matmul_flops(m, w, x) for m, w, x in zip(proj, w_grad, x_grad, strict=True))
    q_g, k_g, v_g = (w or x for w, x in zip(w_grad, x_grad, strict=True))
    pairs = lq * (sk // max(batch, 1)) * e  # each query meets its example's keys
    flops += 2 * pairs * (1 + int(q_g) + int(k_g))  # scores = Q K^T
    flops += 2 * pairs * (1 + int(q_g or k_g) + int(v_g))  # context = softmax(scores) V
    out_w = module.out_proj.weight.requires_grad
    flops += _matmul_flops(lq * e * e, out_w, q_g or k_g or v_g)
    return sum(proj) + 2 * pairs + lq * e * e, flops


def count_training(model: nn.Module, example: torch.Tensor) -> FlopCount:
    """Per-example training FLOPs of ``model`` on ``example`` (a batch; see the module
    docstring), from one forward pass with autograd enabled; the module's mode and
    parameters are untouched (no backward runs)."""
    batch = max(int(example.shape[0]), 1)
    macs = flops = 0

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        nonlocal macs, flops
        if isinstance(module, nn.MultiheadAttention):
            m, f = _attention(module, args, kwargs, batch)
        else:
            m, f = _layer(module, args, out)
        macs, flops = macs + m, flops + f

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()]
    try:
        with torch.enable_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return FlopCount(macs // batch, flops // batch)
