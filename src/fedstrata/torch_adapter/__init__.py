"""The torch adapter: the only part of fedstrata that imports torch.

:class:`Task` is the task API (Issue 14): the user's model factory, per-client data,
loss, optimizer, loop and metrics. :class:`TorchTrainer` trains any task (the
built-in models are tasks too) over one flat float32 parameter vector; the factories
are its picklable recipes for worker processes. :func:`load_model` returns a run's
final model in the task's own module.
"""

from fedstrata.torch_adapter.data import ClientData, FirstExample, TaskPopulation
from fedstrata.torch_adapter.export import load_model, save_state_dict, state_dict
from fedstrata.torch_adapter.factories import TaskTrainerFactory, TorchTrainerFactory, builtin_task
from fedstrata.torch_adapter.loops import LocalTraining
from fedstrata.torch_adapter.models import ModelKind, build_model, forward_macs, init_params_
from fedstrata.torch_adapter.readers import ImageFolder, read_table
from fedstrata.torch_adapter.task import Task, resolve_task
from fedstrata.torch_adapter.threads import set_torch_threads
from fedstrata.torch_adapter.trainer import ShuffleSeeding, TorchTrainer

__all__ = [
    "ClientData",
    "FirstExample",
    "ImageFolder",
    "LocalTraining",
    "ModelKind",
    "ShuffleSeeding",
    "Task",
    "TaskPopulation",
    "TaskTrainerFactory",
    "TorchTrainer",
    "TorchTrainerFactory",
    "build_model",
    "builtin_task",
    "forward_macs",
    "init_params_",
    "load_model",
    "read_table",
    "resolve_task",
    "save_state_dict",
    "set_torch_threads",
    "state_dict",
]
