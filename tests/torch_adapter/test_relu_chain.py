"""ReluChain: the hand-written Linear-ReLU chain equals autograd bit for bit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedstrata.core import ArrayDataset, LocalPlan, RoundContext
from fedstrata.errors import TaskError
from fedstrata.torch_adapter import Task, TorchTrainer
from fedstrata.torch_adapter.binding import FlatModel
from fedstrata.torch_adapter.relu_chain import ReluChain, relu_chain


def chain(widths: list[int], flatten: bool = False) -> nn.Sequential:
    mods: list[nn.Module] = [nn.Flatten(1)] if flatten else []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        if i:
            mods.append(nn.ReLU())
        mods.append(nn.Linear(a, b))
    return nn.Sequential(*mods)


def bound(module: nn.Module) -> tuple[nn.Module, FlatModel]:
    flat = FlatModel.bind(module, ())
    return flat.module, flat


def autograd_step(model: nn.Module, grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    grad.zero_()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()  # type: ignore[no-untyped-call]
    return float(loss.item())


def chain_step(kernel: ReluChain, grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    grad.zero_()
    return float(kernel.loss_and_grad(x, y).item())


@settings(max_examples=60, deadline=None)
@given(
    hidden=st.lists(st.integers(2, 24), min_size=0, max_size=2),
    batch=st.integers(1, 9),
    scale=st.sampled_from([0.05, 1.0, 30.0]),
    flatten=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_loss_and_gradients_equal_autograd_bit_for_bit(
    hidden: list[int], batch: int, scale: float, flatten: bool, seed: int
) -> None:
    torch.manual_seed(seed)
    widths = [12, *hidden, 5]
    model, flat = bound(chain(widths, flatten))
    kernel = relu_chain(model)
    assert kernel is not None
    flat.flat.normal_(0.0, scale)
    shape = (batch, 3, 4) if flatten else (batch, 12)
    x = torch.randn(shape) - 0.3
    y = torch.randint(0, 5, (batch,))
    assert kernel.accepts(x, y)
    expected_loss = autograd_step(model, flat.grad, x, y)
    expected = flat.grad.clone()
    got_loss = chain_step(kernel, flat.grad, x, y)
    assert got_loss == expected_loss or (np.isnan(got_loss) and np.isnan(expected_loss))
    assert flat.grad.numpy().tobytes() == expected.numpy().tobytes()


def test_ignored_labels_count_as_in_cross_entropy() -> None:
    torch.manual_seed(1)
    model, flat = bound(chain([6, 7, 3]))
    kernel = relu_chain(model)
    assert kernel is not None
    x, y = torch.randn(5, 6), torch.tensor([0, -100, 2, 1, -100])
    expected_loss = autograd_step(model, flat.grad, x, y)
    expected = flat.grad.clone()
    assert chain_step(kernel, flat.grad, x, y) == expected_loss
    assert torch.equal(flat.grad, expected)


class _Seq(nn.Sequential):
    pass


class _Linear(nn.Linear):
    pass


def _shared() -> nn.Sequential:
    layer = nn.Linear(4, 4)
    return nn.Sequential(layer, nn.ReLU(), layer)


def _hooked() -> nn.Sequential:
    model = chain([4, 5, 3])
    model[0].register_forward_hook(lambda *_: None)
    return model


@pytest.mark.parametrize(
    "build",
    [
        lambda: _Seq(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)),
        lambda: nn.Sequential(_Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)),
        lambda: nn.Sequential(nn.Linear(4, 1), nn.ReLU(), nn.Linear(1, 3)),
        lambda: nn.Sequential(nn.Linear(4, 5, bias=False), nn.ReLU(), nn.Linear(5, 3)),
        lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)),
        lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU()),
        lambda: nn.Sequential(nn.Flatten(2), nn.Linear(4, 3)),
        _shared,
        _hooked,
    ],
    ids=[
        "subclass",
        "linear-subclass",
        "width-1",
        "no-bias",
        "tanh",
        "ends-in-relu",
        "flatten-dim-2",
        "shared",
        "hooked",
    ],
)
def test_other_modules_are_not_matched(build: object) -> None:
    assert callable(build)
    model, _ = bound(build())
    assert relu_chain(model) is None


def test_frozen_or_unbound_parameters_are_not_matched() -> None:
    assert relu_chain(nn.Sequential()) is None
    model = chain([4, 5, 3])
    assert relu_chain(model) is None  # no .grad bound yet
    frozen = chain([4, 5, 3])
    frozen[0].bias.requires_grad_(False)
    model, _ = bound(frozen)
    assert relu_chain(model) is None


def test_only_float_inputs_with_class_labels_are_accepted() -> None:
    model, _ = bound(chain([4, 5, 3]))
    kernel = relu_chain(model)
    assert kernel is not None
    x, y = torch.randn(2, 4), torch.tensor([0, 2])
    assert kernel.accepts(x, y)
    assert not kernel.accepts(x.double(), y)
    assert not kernel.accepts(x, y.int())
    assert not kernel.accepts(x, torch.rand(2, 3))  # class probabilities
    assert not kernel.accepts(x[0], y[:1])  # one unbatched example
    assert not kernel.accepts(torch.randn(2, 2, 2), y)  # no Flatten in the chain
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not kernel.accepts(x, y)
    with torch.autograd.set_detect_anomaly(True):
        assert not kernel.accepts(x, y)


def test_a_label_out_of_range_fails_with_the_batch_named() -> None:
    task = Task(model=lambda: chain([4, 5, 3]))
    trainer = TorchTrainer(task)
    params = trainer.initial_params(0)
    data = ArrayDataset(x=np.ones((3, 4), np.float32), y=np.array([0, 7, 1], np.int64))
    c = RoundContext(0, root_seed=0).for_client(0)
    with pytest.raises(TaskError, match="forward pass or loss failed on a batch"):
        trainer.train(params, data, LocalPlan(), c, np.empty_like(params))
