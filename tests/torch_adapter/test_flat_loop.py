"""FlatLoop: the fast path's loop equals torch.optim.SGD (+ FedProx) bit for bit, and
the autograd-free chain step gives the same bits as autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedstrata.core.training import LocalPlan
from fedstrata.torch_adapter.binding import FlatModel
from fedstrata.torch_adapter.flat_loop import FlatLoop
from fedstrata.torch_adapter.loops import default_loss
from fedstrata.torch_adapter.precision import PrecisionPolicy
from fedstrata.torch_adapter.relu_chain import relu_chain


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g))
            for _ in range(5)]  # fmt: skip


def _reference(plan: LocalPlan) -> np.ndarray:
    """The same batches through a plain module, torch.optim.SGD and autograd."""
    model = _model()
    anchor = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=plan.lr, momentum=plan.momentum,
                          weight_decay=plan.weight_decay)  # fmt: skip
    for x, y in _batches():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if plan.prox_mu:  # FedProx: + mu * (w - w_global)
            with torch.no_grad():
                for p, a in zip(model.parameters(), anchor, strict=True):
                    p.grad.add_(p - a, alpha=plan.prox_mu)
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()


@pytest.mark.parametrize("chain", [False, True])
@pytest.mark.parametrize(
    "plan",
    [
        LocalPlan(lr=0.1),
        LocalPlan(lr=0.1, momentum=0.9, weight_decay=0.01),
        LocalPlan(lr=0.1, momentum=0.5, prox_mu=0.3),
    ],
)
def test_the_flat_loop_equals_torch_optim_sgd_bit_for_bit(plan: LocalPlan, chain: bool) -> None:
    bound = FlatModel.bind(_model(), ())
    kernel = relu_chain(bound.module) if chain else None
    assert (kernel is not None) == chain
    loop = FlatLoop(bound, default_loss, kernel)
    loop.anchor(bound.flat_np.copy(), plan)
    mixed = PrecisionPolicy.of("fp32").start()
    steps, loss_sum, seen = loop.run(iter(_batches()), plan, "test data", mixed)
    assert (steps, seen) == (5, 20)
    assert np.isfinite(loss_sum)
    assert bound.flat_np.tobytes() == _reference(plan).tobytes()
