"""Training FLOPs counted from the module's layers, against the dispatcher's count
(``FlopCounterMode``) and against hand-counted values."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedstrata.torch_adapter import TorchTrainerFactory, build_model
from fedstrata.torch_adapter.flops import count_training

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_module(name: str) -> ModuleType:
    """``examples/<name>/<name>.py`` as a module (importing it writes nothing)."""
    spec = importlib.util.spec_from_file_location(f"_flops_{name}", EXAMPLES / name / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def reference_flops(model: nn.Module, x: torch.Tensor) -> float:
    """Forward + backward FLOPs per example of a cross-entropy step, by the dispatcher."""
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(x)
        y = torch.zeros(x.shape[0], dtype=torch.long)
        nn.functional.cross_entropy(logits, y).backward()
    return counter.get_total_flops() / x.shape[0]


@pytest.mark.parametrize(
    ("kind", "shape"), [("logreg", (64,)), ("mlp", (64,)), ("cnn", (64,)), ("cnn", (1, 28, 28))]
)
def test_builtin_models_match_flop_counter(kind: str, shape: tuple[int, ...]) -> None:
    trainer = TorchTrainerFactory(kind, shape, 10, hidden=32)()
    x = torch.randn(8, *shape)
    reference = reference_flops(trainer.model, x)
    assert abs(trainer.flops_per_example - reference) <= 0.10 * reference


def test_image_example_cnn_matches_flop_counter() -> None:
    model = example_module("image_cnn").ShapesCNN()
    x = torch.rand(8, 3, 16, 16)
    counted = count_training(model, x[:1]).training_flops
    assert abs(counted - reference_flops(model, x)) <= 0.10 * reference_flops(model, x)


def test_text_example_transformer_matches_flop_counter() -> None:
    text = example_module("text_transformer")
    model = text.TransformerClassifier()
    x = torch.randint(1, text.CONFIG.vocab_size, (8, text.CONFIG.max_len))
    reference = reference_flops(model, x)
    counted = count_training(model, x[:1]).training_flops
    assert abs(counted - reference) <= 0.10 * reference


def test_small_mlp_exact() -> None:
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    count = count_training(model, torch.zeros(4, 5))
    assert count.forward_macs == 5 * 7 + 7 * 3
    assert count.training_flops == 2 * 2 * 5 * 7 + 3 * 2 * 7 * 3


def test_frozen_layer_computes_no_weight_gradient_and_passes_none_down() -> None:
    model = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3))
    model[0].requires_grad_(False)  # frozen first layer: forward only
    assert count_training(model, torch.zeros(1, 5)).training_flops == 2 * 5 * 7 + 2 * 2 * 7 * 3
    model[1].requires_grad_(False)
    assert count_training(model, torch.zeros(1, 5)).training_flops == 2 * (5 * 7 + 7 * 3)


def test_attention_is_counted_analytically() -> None:
    e, length = 8, 6
    mha = nn.MultiheadAttention(e, 2, batch_first=True)
    x = torch.zeros(1, length, e, requires_grad=True)
    proj = length * e * e  # one projection's MACs
    pairs = length * length * e  # one attention matmul's MACs
    model = _SelfAttention(mha)  # key and value by keyword
    count = count_training(model, x)
    assert count.forward_macs == 4 * proj + 2 * pairs
    assert count.training_flops == 6 * (4 * proj + 2 * pairs)
    model.detach_input = True  # no input gradient for the in-projections
    assert count_training(model, x).training_flops == 6 * (4 * proj + 2 * pairs) - 2 * 3 * proj


class _SelfAttention(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha, self.detach_input = mha, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach() if self.detach_input else x
        out: torch.Tensor = self.mha(x, key=x, value=x, need_weights=False)[0]
        return out


def test_conv1d_and_transposed_conv() -> None:
    conv = nn.Conv1d(2, 4, 3, padding=1)
    assert count_training(conv, torch.zeros(1, 2, 10)).forward_macs == 4 * 10 * 2 * 3
    up = nn.ConvTranspose2d(3, 2, 2, stride=2)
    assert count_training(up, torch.zeros(1, 3, 4, 4)).forward_macs == 3 * 4 * 4 * 2 * 2 * 2


def test_embedding_is_a_lookup_and_meta_models_count() -> None:
    model = nn.Sequential(nn.Embedding(50, 4), nn.Flatten(1), nn.Linear(12, 2))
    tokens = torch.zeros(1, 3, dtype=torch.long)
    # the embedding's output requires grad (its table trains): the head's input gradient
    assert count_training(model, tokens).training_flops == 6 * 12 * 2
    meta = build_model("mlp", (6,), 3, 8)
    assert count_training(meta, torch.zeros(1, 6, device="meta")).forward_macs == 6 * 8 + 8 * 3
