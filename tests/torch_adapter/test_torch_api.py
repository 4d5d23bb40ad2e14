"""Public surface of fedstrata.torch_adapter, and conformance to the Trainer protocol."""

from __future__ import annotations

import fedstrata.torch_adapter as adapter
from fedstrata.core import Trainer, TrainerFactory


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
    }
    for name in adapter.__all__:
        assert getattr(adapter, name) is not None


def test_trainer_satisfies_the_core_protocols() -> None:
    factory: TrainerFactory = adapter.TorchTrainerFactory("mlp", (4,), 2, torch_threads=None)
    trainer: Trainer = factory()
    assert trainer.spec.size == 4 * 128 + 128 + 128 * 2 + 2
