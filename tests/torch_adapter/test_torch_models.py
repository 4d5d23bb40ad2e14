"""Model builders: generator-driven init equals PyTorch's default, MAC counts, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedstrata.errors import ConfigError
from fedstrata.torch_adapter import ModelKind, TorchTrainerFactory, build_model, forward_macs


def _flat(model: nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def _reference(kind: str, hidden: int = 16) -> nn.Module:
    if kind == "logreg":
        return nn.Sequential(nn.Linear(64, 10))
    if kind == "mlp":
        return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.Linear(32 * 2 * 2, hidden),
        nn.Linear(hidden, 10),
    )


@pytest.mark.parametrize("kind", ["logreg", "mlp", "cnn"])
@pytest.mark.parametrize("seed", [0, 7])
def test_init_equals_pytorch_default_after_manual_seed(kind: str, seed: int) -> None:
    trainer = TorchTrainerFactory(kind, (64,), 10, hidden=16, torch_threads=None)()
    ours = trainer.initial_params(seed)
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        expected = _flat(_reference(kind))
    finally:
        torch.set_rng_state(state)
    np.testing.assert_array_equal(ours, expected)


def test_global_rng_is_never_touched() -> None:
    before = torch.get_rng_state()
    trainer = TorchTrainerFactory("cnn", (1, 8, 8), 10, torch_threads=None)()
    trainer.initial_params(3)
    assert torch.equal(torch.get_rng_state(), before)


def test_build_model_is_on_meta_device() -> None:
    model = build_model(ModelKind.MLP, (64,), 10)
    assert all(p.is_meta for p in model.parameters())


def test_forward_macs() -> None:
    assert forward_macs(build_model("mlp", (64,), 10, 128), (64,)) == 64 * 128 + 128 * 10
    assert forward_macs(build_model("logreg", (8, 8), 3), (8, 8)) == 64 * 3
    conv = 8 * 8 * 16 * 9 + 4 * 4 * 32 * 16 * 9
    assert forward_macs(build_model("cnn", (64,), 10, 32), (64,)) == conv + 128 * 32 + 32 * 10


@pytest.mark.parametrize("shape", [(784,), (28, 28), (1, 28, 28)])
def test_cnn_accepts_mnist_layouts(shape: tuple[int, ...]) -> None:
    trainer = TorchTrainerFactory("cnn", shape, 10, hidden=8, torch_threads=None)()
    params = trainer.initial_params(0)
    x = np.random.default_rng(0).random((3, *shape)).astype(np.float32)
    from fedstrata.core.training import ArrayDataset

    result = trainer.evaluate(params, ArrayDataset(x=x, y=np.array([0, 1, 2], np.int64)))
    assert result.num_examples == 3
    assert np.isfinite(result.loss)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("transformer", (64,), 10), "model kind"),
        (("cnn", (60,), 10), "square image"),
        (("cnn", (3, 8, 8), 10), "single-channel"),
        (("mlp", (), 10), "input_shape"),
        (("mlp", (64,), 1), "num_classes"),
        (("mlp", (64,), 10, 0), "hidden"),
    ],
)
def test_invalid_models_raise_config_error(args: tuple[object, ...], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_model(*args)
