"""The torch adapter: the only part of fedstrata that imports torch.

:class:`TorchTrainer` implements :class:`fedstrata.core.training.Trainer` over one
flat float32 parameter vector; :class:`TorchTrainerFactory` is its picklable recipe
for worker processes.
"""

from fedstrata.torch_adapter.models import ModelKind, build_model, forward_macs, init_params_
from fedstrata.torch_adapter.threads import set_torch_threads
from fedstrata.torch_adapter.trainer import ShuffleSeeding, TorchTrainer, TorchTrainerFactory

__all__ = [
    "ModelKind",
    "ShuffleSeeding",
    "TorchTrainer",
    "TorchTrainerFactory",
    "build_model",
    "forward_macs",
    "init_params_",
    "set_torch_threads",
]
