"""What a task's model costs to train, measured on the module (Issue 17 part 2).

:func:`measure_footprint` runs the trainer's module on its example input:

* FLOPs per example, two ways: the simulator's figure
  (:attr:`TorchTrainer.flops_per_example`, counted layer by layer from forward hooks:
  :mod:`fedstrata.torch_adapter.flops`) and an operator-level count of one forward
  and backward pass by ``torch.utils.flop_counter.FlopCounterMode`` (every matmul,
  convolution and attention kernel, so it also sees what the layer count misses);
* activation memory of one batch: the bytes of the tensors autograd saves for the
  backward pass of a batch of ``batch_size`` (``saved_tensors_hooks``, each storage
  once, parameters excluded) under the configured precision, where autocast's 16-bit
  copies halve them;
* training memory: weights, gradients and optimizer state (float32) plus those
  activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedstrata.core.training import LocalPlan, OptimizerKind
from fedstrata.errors import TaskError
from fedstrata.torch_adapter.trainer import TorchTrainer

__all__ = ["ModelFootprint", "counted_flops", "measure_footprint", "saved_activation_bytes"]

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class ModelFootprint:
    """A model's size and training cost per example and per batch.

    Attributes:
        params: entries of the global model (parameters and aggregated buffers).
        trainable: trainable parameters.
        flops_per_example: forward+backward FLOPs the simulator's clock uses.
        counted_flops_per_example: forward+backward FLOPs counted by
            ``FlopCounterMode``; None when the model has no example input.
        activation_bytes: bytes saved for backward by one batch; None without an
            example input.
        batch_size: the batch ``activation_bytes`` is for.
        optimizer_state_floats: float32 values of optimizer state per trainable
            parameter (SGD with momentum 1, Adam 2, plain SGD 0).
        precision: the resolved precision (``fp32``, ``bf16``, ``fp16``).
    """

    params: int
    trainable: int
    flops_per_example: float
    counted_flops_per_example: float | None
    activation_bytes: int | None
    batch_size: int
    optimizer_state_floats: int
    precision: str

    @property
    def train_memory_bytes(self) -> int:
        """Weights, gradients, optimizer state and one batch's activations."""
        state = FLOAT32_BYTES * (self.params + self.trainable * (1 + self.optimizer_state_floats))
        return state + (self.activation_bytes or 0)


def _outputs_sum(out: Any) -> torch.Tensor:
    """The sum of every floating tensor in ``out`` (a scalar to call backward on)."""
    if isinstance(out, torch.Tensor):
        return out.float().sum() if out.is_floating_point() else torch.zeros(())
    if isinstance(out, tuple | list):
        return sum((_outputs_sum(o) for o in out), torch.zeros(()))
    if isinstance(out, dict):
        return sum((_outputs_sum(o) for o in out.values()), torch.zeros(()))
    return torch.zeros(())


def _forward_backward(model: nn.Module, batch: torch.Tensor) -> None:
    loss = _outputs_sum(model(batch))
    if loss.requires_grad:
        loss.backward()  # type: ignore[no-untyped-call]
    model.zero_grad()


def counted_flops(model: nn.Module, batch: torch.Tensor) -> float:
    """Forward+backward FLOPs of ``batch`` per example, by ``FlopCounterMode``.

    The backward pass starts from the sum of the outputs (the loss adds a negligible
    amount). The module's gradients are zeroed afterwards.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        _forward_backward(model, batch)
    return float(counter.get_total_flops()) / max(int(batch.shape[0]), 1)


def saved_activation_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """Bytes autograd saves for the backward pass of ``batch`` (parameters excluded).

    Each storage counts once (views of one tensor share it).
    """
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _forward_backward(model, batch)
    return sum(seen.values())


def _optimizer_floats(plan: LocalPlan, trainer: TorchTrainer) -> int:
    if trainer.task.optimizer is not None:  # the task's own: Adam-like is the worst case
        return 2
    if plan.optimizer is OptimizerKind.ADAM:
        return 2
    return 1 if plan.momentum > 0 else 0


def measure_footprint(trainer: TorchTrainer, plan: LocalPlan) -> ModelFootprint:
    """Measure ``trainer``'s model on its example input (see the module docstring).

    The module runs in training mode under the trainer's precision; its global
    parameters are restored afterwards.

    Raises:
        TaskError: the model failed on its example input.
    """
    example = trainer.example_input()
    counted = activations = None
    if example is not None:
        batch = torch.cat([example] * plan.batch_size)
        saved = trainer.flat_np.copy()
        try:
            trainer.model.train()
            with torch.enable_grad():
                counted = counted_flops(trainer.model, batch)
                with trainer.precision.autocast_forward(trainer.model):
                    activations = saved_activation_bytes(trainer.model, batch)
        except Exception as exc:
            raise TaskError(
                f"the model failed on its example input while fedstrata measured it: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            trainer.flat_np[:] = saved
    return ModelFootprint(
        params=trainer.spec.size,
        trainable=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        flops_per_example=trainer.flops_per_example,
        counted_flops_per_example=counted,
        activation_bytes=activations,
        batch_size=plan.batch_size,
        optimizer_state_floats=_optimizer_floats(plan, trainer),
        precision=trainer.precision.mode.value,
    )
