"""The torch implementation of :class:`fedstrata.core.training.Trainer`.

One model per trainer (per worker process), never one per client. The model's
parameters are views into ONE flat float32 tensor that shares memory with a NumPy
vector (``torch.from_numpy``), and their ``.grad`` tensors are views into one flat
gradient tensor. So, per client:

* loading the global model is one ``np.copyto``;
* zeroing the gradients is one ``zero_()``;
* an SGD step is two to five in-place ops on the flat vectors (no per-parameter
  loop), with the exact arithmetic of ``torch.optim.SGD`` (``dampening=0``,
  ``nesterov=False``): ``g += wd * w``; ``buf = g`` (first step) or
  ``buf = momentum * buf + g``; ``w += -lr * buf``;
* the delta is one ``np.subtract`` into the caller's ``out``.

FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020)
adds the gradient of ``mu/2 * ||w - w_global||^2``, i.e. ``mu * (w - w_global)``, to
the loss gradient before the optimizer sees it. Adam uses ``torch.optim.Adam``
(built per client; ``momentum`` is ignored, ``weight_decay`` is Adam's L2 term).

No DataLoader: the client's NumPy arrays become tensors with ``torch.from_numpy``
(no copy), an epoch is ``torch.randperm`` from a ``torch.Generator`` seeded from the
client context, and minibatches are index gathers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar, final

import numpy as np
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from fedstrata.core.context import ClientContext
from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.training import (
    ArrayDataset,
    EvalResult,
    LocalPlan,
    OptimizerKind,
    TrainResult,
)
from fedstrata.errors import ConfigError, DataError
from fedstrata.torch_adapter.models import ModelKind, build_model, forward_macs, init_params_

__all__ = ["ShuffleSeeding", "TorchTrainer", "TorchTrainerFactory"]

EVAL_BATCH = 1024
FLOPS_PER_MAC = 6  # forward 2 FLOPs per MAC, backward about twice the forward
W1_SEED_STRIDE = 100003

_E = TypeVar("_E", bound=StrEnum)


class ShuffleSeeding(StrEnum):
    """How a client's shuffling generator is seeded.

    ``DERIVED``: ``ctx.seed("shuffle")`` (fedstrata's per-(round, client, stage)
    seeds). ``ROUND_CLIENT``: ``100003 * round + client_id``, the rule of benchmark
    workload W1's reference loop, to reproduce its arithmetic exactly.
    """

    DERIVED = "derived"
    ROUND_CLIENT = "round_client"


def _shuffle_seed(ctx: ClientContext, seeding: ShuffleSeeding) -> int:
    if seeding is ShuffleSeeding.ROUND_CLIENT:
        return W1_SEED_STRIDE * ctx.round_idx + ctx.client_id
    return ctx.seed("shuffle")


def _bind_flat(model: nn.Module, spec: ParamSpec, flat: torch.Tensor, grad: torch.Tensor) -> None:
    """Replace every parameter by a view into ``flat`` with its grad a view into ``grad``."""
    for name, shape, offset in zip(spec.names, spec.shapes, spec.offsets, strict=True):
        prefix, _, attr = name.rpartition(".")
        module = model.get_submodule(prefix)
        size = math.prod(shape)
        param = nn.Parameter(flat[offset : offset + size].view(shape))
        param.grad = grad[offset : offset + size].view(shape)
        setattr(module, attr, param)


def _batches(n: int, plan: LocalPlan, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Minibatch index tensors: ``plan.epochs`` epochs or ``plan.steps`` steps.

    Every epoch is a fresh ``torch.randperm``; with ``steps`` the epochs cycle.
    """
    steps_left = plan.steps
    epochs_left = plan.epochs
    while epochs_left is None or epochs_left > 0:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, plan.batch_size):
            if steps_left is not None:
                if steps_left == 0:
                    return
                steps_left -= 1
            yield perm[start : start + plan.batch_size]
        if epochs_left is not None:
            epochs_left -= 1


@final
class TorchTrainer:
    """Local training and evaluation of one torch model over flat float32 vectors.

    Owns one model whose parameters alias :attr:`flat`; not thread-safe (one trainer
    per worker process). Implements :class:`fedstrata.core.training.Trainer`.
    """

    def __init__(
        self,
        kind: ModelKind | str,
        input_shape: tuple[int, ...],
        num_classes: int,
        hidden: int = 128,
        shuffle_seeding: ShuffleSeeding | str = ShuffleSeeding.DERIVED,
    ) -> None:
        """Build the model and its flat buffers.

        Raises:
            ConfigError: unknown model kind or invalid sizes.
        """
        self._input_shape = tuple(int(d) for d in input_shape)
        self._num_classes = num_classes
        self._seeding = ShuffleSeeding(shuffle_seeding)
        self.model = build_model(kind, self._input_shape, num_classes, hidden)
        self._spec = ParamSpec.from_arrays(
            [(n, np.empty(tuple(p.shape), np.float32)) for n, p in self.model.named_parameters()]
        )
        self.flat_np: FloatVector = self._spec.zeros()
        self.flat = torch.from_numpy(self.flat_np)
        self.grad = torch.zeros(self._spec.size)
        self._momentum = torch.zeros(self._spec.size)
        self._global_np: FloatVector = self._spec.zeros()
        self._global = torch.from_numpy(self._global_np)
        self._scratch = torch.zeros(self._spec.size)
        _bind_flat(self.model, self._spec, self.flat, self.grad)
        # After binding, the model lives on the CPU: one tiny forward pass there is
        # microseconds, where the same pass on the ``meta`` device first loads torch's
        # meta kernels (over a second per process).
        self._macs = forward_macs(self.model, self._input_shape)

    @property
    def spec(self) -> ParamSpec:
        """Names, shapes and offsets of the model's parameters in the flat vector."""
        return self._spec

    @property
    def flops_per_example(self) -> float:
        """Forward+backward FLOPs per example: ``6 x`` forward multiply-accumulates.

        A forward multiply-accumulate is 2 FLOPs and the backward pass costs about
        twice the forward (gradients with respect to inputs and to weights), hence
        ``6 * MACs``; only Linear and Conv2d layers are counted (activations, pooling
        and the loss are negligible next to them).
        """
        return float(FLOPS_PER_MAC * self._macs)

    def initial_params(self, seed: int) -> FloatVector:
        """PyTorch-default initialisation drawn from ``torch.Generator().manual_seed(seed)``.

        Equal to ``torch.manual_seed(seed)`` then constructing the model the usual
        way, without touching the global random state.

        Raises:
            ConfigError: ``seed`` is not a non-negative int.
        """
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"initial_params: seed must be a non-negative int, got {seed!r}")
        init_params_(self.model, torch.Generator().manual_seed(int(seed)))
        return self.flat_np.copy()

    def _tensors(self, data: ArrayDataset, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-copy tensors of ``data`` (copies only if dtype or writability require)."""
        x, y = data.x, data.y
        if len(y) == 0:
            raise DataError(f"{what}: the dataset is empty")
        if tuple(x.shape[1:]) != self._input_shape:
            raise DataError(
                f"{what}: examples have shape {tuple(x.shape[1:])}, "
                f"the model expects {self._input_shape}"
            )
        if x.dtype != np.float32 or not x.flags.writeable:
            x = np.array(x, dtype=np.float32)
        if y.dtype != np.int64 or not y.flags.writeable:
            y = np.array(y, dtype=np.int64)
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= self._num_classes:
            raise DataError(
                f"{what}: labels must lie in [0, {self._num_classes}), got [{lo}, {hi}]"
            )
        return torch.from_numpy(x), torch.from_numpy(y)

    def train(
        self,
        params: FloatVector,
        data: ArrayDataset,
        plan: LocalPlan,
        ctx: ClientContext,
        out: FloatVector,
    ) -> TrainResult:
        """Train from ``params`` on ``data``; write ``new - params`` into ``out``.

        Non-finite parameters are not an error here: the delta is written as is and
        the caller validates it.

        Raises:
            ShapeError: ``params`` or ``out`` is not a float32 vector of the spec's size.
            DataError: empty data, wrong example shape, or labels out of range.
        """
        self._spec.check(params, "train params")
        self._spec.check(out, "train out")
        x, y = self._tensors(data, f"client {ctx.client_id} train")
        np.copyto(self.flat_np, params)
        if plan.prox_mu > 0:
            np.copyto(self._global_np, params)
        gen = torch.Generator().manual_seed(_shuffle_seed(ctx, self._seeding))
        with torch.enable_grad():
            steps, loss_sum, seen = self._run(x, y, plan, gen)
        np.subtract(self.flat_np, params, out=out)
        return TrainResult(len(data), steps, {"train_loss": loss_sum / seen})

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, plan: LocalPlan, gen: torch.Generator
    ) -> tuple[int, float, int]:
        """The training loop; returns (steps, sum of per-example loss, examples seen)."""
        adam = None
        if plan.optimizer is OptimizerKind.ADAM:
            adam = torch.optim.Adam(
                self.model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay
            )
        steps, loss_sum, seen = 0, 0.0, 0
        for idx in _batches(int(y.shape[0]), plan, gen):
            self.grad.zero_()
            loss = cross_entropy(self.model(x[idx]), y[idx])
            torch.autograd.backward(loss)
            with torch.no_grad():
                if adam is None:
                    self._sgd_step(plan, first=steps == 0)
                else:
                    self._add_prox(plan)
                    adam.step()
            steps += 1
            loss_sum += loss.item() * idx.shape[0]
            seen += int(idx.shape[0])
        return steps, loss_sum, seen

    def _add_prox(self, plan: LocalPlan) -> None:
        if plan.prox_mu > 0:
            torch.sub(self.flat, self._global, out=self._scratch)
            self.grad.add_(self._scratch, alpha=plan.prox_mu)

    def _sgd_step(self, plan: LocalPlan, first: bool) -> None:
        """``torch.optim.SGD`` arithmetic on the flat vectors (dampening 0, no Nesterov)."""
        self._add_prox(plan)
        step = self.grad
        if plan.weight_decay != 0:
            step.add_(self.flat, alpha=plan.weight_decay)
        if plan.momentum != 0:
            if first:
                self._momentum.copy_(step)
            else:
                self._momentum.mul_(plan.momentum).add_(step, alpha=1.0)
            step = self._momentum
        self.flat.add_(step, alpha=-plan.lr)

    def evaluate(self, params: FloatVector, data: ArrayDataset) -> EvalResult:
        """Mean cross-entropy and accuracy of ``params`` on ``data`` (batches of 1024).

        Raises:
            ShapeError: ``params`` is not a float32 vector of the spec's size.
            DataError: empty data, wrong example shape, or labels out of range.
        """
        self._spec.check(params, "evaluate params")
        x, y = self._tensors(data, "evaluate")
        np.copyto(self.flat_np, params)
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, int(y.shape[0]), EVAL_BATCH):
                xb, yb = x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
                logits = self.model(xb)
                loss_sum += cross_entropy(logits, yb, reduction="sum").item()
                correct += int((logits.argmax(dim=1) == yb).sum().item())
        n = int(y.shape[0])
        return EvalResult(loss=loss_sum / n, accuracy=correct / n, num_examples=n)


def _enum(cls: type[_E], value: str, field: str) -> _E:
    try:
        return cls(value)
    except ValueError as exc:
        allowed = ", ".join(m.value for m in cls)
        raise ConfigError(
            f"TorchTrainerFactory.{field} must be one of {allowed}; got {value!r}"
        ) from exc


@dataclass(frozen=True)
class TorchTrainerFactory:
    """Picklable recipe for a :class:`TorchTrainer`, called inside worker processes.

    Attributes:
        model: model architecture (a :class:`ModelKind` or its value; stored as the enum).
        input_shape: shape of one example (``x.shape[1:]``).
        num_classes: number of classes.
        hidden: hidden width (mlp, cnn).
        torch_threads: intra-op threads set with ``torch.set_num_threads`` when the
            factory is called (a per-process setting); ``None`` leaves it alone.
        shuffle_seeding: how each client's shuffle generator is seeded.
    """

    model: ModelKind | str
    input_shape: tuple[int, ...]
    num_classes: int
    hidden: int = 128
    torch_threads: int | None = 1
    shuffle_seeding: ShuffleSeeding | str = ShuffleSeeding.DERIVED

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", _enum(ModelKind, self.model, "model"))
        seeding = _enum(ShuffleSeeding, self.shuffle_seeding, "shuffle_seeding")
        object.__setattr__(self, "shuffle_seeding", seeding)
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(
                f"TorchTrainerFactory.torch_threads must be >= 1 or None, got {self.torch_threads}"
            )
        build_model(self.model, self.input_shape, self.num_classes, self.hidden)  # validates

    def __call__(self) -> TorchTrainer:
        """Set the thread count (if asked) and build a trainer."""
        if self.torch_threads is not None and torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        return TorchTrainer(
            self.model, self.input_shape, self.num_classes, self.hidden, self.shuffle_seeding
        )
