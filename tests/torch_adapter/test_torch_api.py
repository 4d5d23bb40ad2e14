"""Public surface of fedstrata.torch_adapter, and conformance to the Trainer protocol."""

from __future__ import annotations

import pytest
import torch

import fedstrata.torch_adapter as adapter
from fedstrata.core import Trainer, TrainerFactory
from fedstrata.errors import ConfigError


def test_all_lists_the_public_api() -> None:
    assert set(adapter.__all__) == {
        "ClientData",
        "FirstExample",
        "ImageFolder",
        "read_table",
        "LocalTraining",
        "Task",
        "TaskPopulation",
        "TaskTrainerFactory",
        "builtin_task",
        "load_model",
        "resolve_task",
        "save_state_dict",
        "state_dict",
        "ModelKind",
        "ShuffleSeeding",
        "TorchTrainer",
        "TorchTrainerFactory",
        "build_model",
        "forward_macs",
        "init_params_",
        "set_torch_threads",
    }
    for name in adapter.__all__:
        assert getattr(adapter, name) is not None


def test_trainer_satisfies_the_core_protocols() -> None:
    factory: TrainerFactory = adapter.TorchTrainerFactory("mlp", (4,), 2, torch_threads=None)
    trainer: Trainer = factory()
    assert trainer.spec.size == 4 * 128 + 128 + 128 * 2 + 2


def test_set_torch_threads_returns_the_previous_count() -> None:
    """Issue 14 part 8: the executors' thread setter (restores what it changed)."""
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    try:
        assert adapter.set_torch_threads(other) == before
        assert torch.get_num_threads() == other
    finally:
        assert adapter.set_torch_threads(before) == other
    with pytest.raises(ConfigError, match="thread count must be >= 1, got 0"):
        adapter.set_torch_threads(0)
