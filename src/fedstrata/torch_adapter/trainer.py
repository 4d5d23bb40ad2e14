"""The torch implementation of :class:`fedstrata.core.training.Trainer`, for any task.

Every model is a task (:class:`fedstrata.torch_adapter.task.Task`): the built-in
``logreg``/``mlp``/``cnn`` are tasks whose factory builds them, and a user's task
brings its own module. One model per trainer (per worker process), never one per
client. The model's global state (parameters, aggregated buffers) lives in views
into ONE flat float32 tensor that shares memory with a NumPy vector
(:mod:`fedstrata.torch_adapter.binding`), so per client:

* loading the global model is one ``np.copyto``;
* the delta is one ``np.subtract`` into the caller's ``out``.

Tasks without their own optimizer or loop (the built-ins and any plain-SGD task)
take the fast path (:mod:`fedstrata.torch_adapter.flat_loop`: in-place SGD with
``torch.optim.SGD``'s exact arithmetic on the flat vectors, FedProx, Adam). Tasks
with their own optimizer or loop run it on the same bound module
(:mod:`fedstrata.torch_adapter.loops`).

No DataLoader for array data: the client's arrays become tensors with
``torch.from_numpy`` (no copy), an epoch is ``torch.randperm`` from a
``torch.Generator`` seeded from the client context, and minibatches are index gathers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum
from typing import final

import numpy as np
import torch
from torch.nn.functional import cross_entropy

from fedstrata.core.context import ClientContext
from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.partial_work import NEVER_STOP, StopCheck
from fedstrata.core.training import (
    ArrayDataset,
    EvalResult,
    LocalData,
    LocalPlan,
    OptimizerKind,
    TrainResult,
)
from fedstrata.core.usercode import call_user, describe
from fedstrata.errors import ConfigError, DataError, TaskError
from fedstrata.torch_adapter.binding import FlatModel, build_module, layout_mismatch, shapes_of
from fedstrata.torch_adapter.data import ClientData, client_data
from fedstrata.torch_adapter.flat_loop import FlatLoop
from fedstrata.torch_adapter.flatsgd import FlatSGD
from fedstrata.torch_adapter.flops import count_training
from fedstrata.torch_adapter.local_state import LocalBuffers
from fedstrata.torch_adapter.loops import (
    LocalTraining,
    default_loss,
    eval_batches,
    minibatches,
    run_optimizer_loop,
    until,
)
from fedstrata.torch_adapter.precision import MixedPrecision, Precision, PrecisionPolicy
from fedstrata.torch_adapter.probe import SgdSettings
from fedstrata.torch_adapter.relu_chain import relu_chain
from fedstrata.torch_adapter.task import Task, as_metrics

__all__ = ["ShuffleSeeding", "TorchTrainer"]

W1_SEED_STRIDE = 100003


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


@final
class TorchTrainer:
    """Local training and evaluation of one task's torch model over flat vectors.

    Owns one module whose global state aliases :attr:`flat_np`; not thread-safe (one
    trainer per worker process). Implements :class:`fedstrata.core.training.Trainer`
    and, when the task has local buffers, :class:`~fedstrata.core.training.ClientStateful`.
    """

    def __init__(
        self,
        task: Task,
        shuffle_seeding: ShuffleSeeding | str = ShuffleSeeding.DERIVED,
        *,
        input_shape: tuple[int, ...] | None = None,
        num_classes: int | None = None,
        example: Callable[[], torch.Tensor] | None = None,
        expected: tuple[tuple[str, tuple[int, ...]], ...] | None = None,
        sgd: SgdSettings | None = None,
        precision: Precision | str = Precision.FP32,
    ) -> None:
        """Build the task's module and bind it to the flat buffers.

        Args:
            task: the task (its ``model`` is called once here).
            shuffle_seeding: how each client's shuffle generator is seeded.
            input_shape: shape of one example, when known (built-in data): checked
                on every dataset, and used to count FLOPs.
            num_classes: label range checked on array data, when known.
            example: returns one input batch (of one example) to count FLOPs with,
                when ``input_shape`` is unknown.
            expected: the global model's ``(name, shape)`` list from the main process;
                a different module here makes every client fail with a clear error.
            sgd: the task's optimizer is this plain SGD (:func:`plain_sgd`): train it
                on the fast path.
            precision: ``client.precision``, resolved here, on the machine that trains
                (:mod:`fedstrata.torch_adapter.precision`).

        Raises:
            ConfigError: an unknown or unavailable precision.
            TaskError: the model factory failed or returned a non-module.
        """
        self.task = task
        self._seeding = ShuffleSeeding(shuffle_seeding)
        self._input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self._num_classes = num_classes
        self._example = example
        self._bound = FlatModel.bind(build_module(task.model, 0), task.local_buffers)
        self.model = self._bound.module
        local = LocalBuffers(self.model, task.local_buffers)  # FedBN: kept per client
        self.client_state: LocalBuffers | None = local if len(local) else None
        self._spec = self._bound.spec
        self.flat_np, self.flat, self.grad = (
            self._bound.flat_np,
            self._bound.flat,
            self._bound.grad,
        )
        self._loss = task.loss or default_loss
        self._mismatch = (
            None if expected is None else layout_mismatch(expected, self._spec, task.model)
        )
        self._flops: int | None = None
        self._sgd = sgd
        self._fast = task.plain_sgd or (sgd is not None and task.train is None)
        self.precision = PrecisionPolicy.of(precision)
        chain = None  # the hand-written chain step computes in float32 only
        if self._fast and task.loss is None and self.precision.mode is Precision.FP32:
            chain = relu_chain(self.model)
        self._loop = FlatLoop(self._bound, self._loss, chain)

    @property
    def spec(self) -> ParamSpec:
        """Names, shapes and offsets of the model's global tensors in the flat vector."""
        return self._spec

    @property
    def flops_per_example(self) -> float:
        """Forward+backward FLOPs per example, counted from the module's layers.

        Per Linear, convolution and multi-head attention layer: ``2 x`` its forward
        multiply-accumulates for the forward pass, as much again for the weight
        gradient and for the input gradient where those are computed
        (:mod:`fedstrata.torch_adapter.flops`). Measured once, on one example.
        """
        if self._flops is None:
            self._flops = self._count_flops()
        return float(self._flops)

    def example_input(self) -> torch.Tensor | None:
        """One input (a batch of one): zeros of the known input shape, else the task's
        first example; None without either."""
        if self._input_shape is not None:
            return torch.zeros((1, *self._input_shape))
        return None if self._example is None else self._example()

    def _count_flops(self) -> int:
        if self._input_shape is not None:
            return count_training(self.model, torch.zeros((1, *self._input_shape))).training_flops
        if self._example is None:
            return 0
        was_training = self.model.training
        self.model.eval()  # one example: batch norm cannot train on it
        try:
            return count_training(self.model, self._example()).training_flops
        except Exception as exc:
            raise TaskError(
                f"model {describe(self.task.model)} failed on client 0's first example "
                f"while fedstrata counted its FLOPs: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self.model.train(was_training)

    def initial_params(self, seed: int) -> FloatVector:
        """The global state of ``torch.manual_seed(seed); task.model()``.

        The global random state is saved and restored around the call.

        Raises:
            ConfigError: ``seed`` is not a non-negative int.
            TaskError: the factory failed, or built a different model than before.
        """
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"initial_params: seed must be a non-negative int, got {seed!r}")
        fresh = FlatModel.bind(build_module(self.task.model, int(seed)), self.task.local_buffers)
        problem = layout_mismatch(shapes_of(self._spec), fresh.spec, self.task.model)
        if problem is not None:
            raise TaskError(problem)
        return fresh.flat_np.copy()

    def _client_data(self, data: LocalData, what: str) -> ClientData:
        """Normalise ``data``; built-in array data are checked against the model."""
        if isinstance(data, ArrayDataset):
            return ClientData(data, self._tensors(data, what), len(data), what)
        if not isinstance(data, ClientData):
            data = client_data(data, what)
        if data.num_examples == 0:
            raise DataError(f"{what}: the dataset is empty ({data.origin})")
        return data

    def _tensors(self, data: ArrayDataset, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-copy tensors of ``data`` (copies only if dtype or writability require)."""
        x, y = data.x, data.y
        if len(y) == 0:
            raise DataError(f"{what}: the dataset is empty")
        if self._input_shape is not None and tuple(x.shape[1:]) != self._input_shape:
            raise DataError(
                f"{what}: examples have shape {tuple(x.shape[1:])}, "
                f"the model expects {self._input_shape}"
            )
        if x.dtype != np.float32 or not x.flags.writeable:
            x = np.array(x, dtype=np.float32)
        if y.dtype != np.int64 or not y.flags.writeable:
            y = np.array(y, dtype=np.int64)
        lo, hi = int(y.min()), int(y.max())
        if self._num_classes is not None and (lo < 0 or hi >= self._num_classes):
            raise DataError(
                f"{what}: labels must lie in [0, {self._num_classes}), got [{lo}, {hi}]"
            )
        return torch.from_numpy(x), torch.from_numpy(y)

    def train(
        self,
        params: FloatVector,
        data: LocalData,
        plan: LocalPlan,
        ctx: ClientContext,
        out: FloatVector,
    ) -> TrainResult:
        """Train from ``params`` on ``data``; write ``new - params`` into ``out``
        (:meth:`train_until` that never stops)."""
        return self.train_until(params, data, plan, ctx, out, stop=NEVER_STOP)

    def train_until(
        self,
        params: FloatVector,
        data: LocalData,
        plan: LocalPlan,
        ctx: ClientContext,
        out: FloatVector,
        *,
        stop: StopCheck,
    ) -> TrainResult:
        """Train from ``params`` on ``data``; write ``new - params`` into ``out``.

        ``stop`` is asked before every local step (the minibatch iterator ends when it
        says so; :class:`~fedstrata.core.partial_work.StoppableTrainer`): the steps run
        are ``TrainResult.num_steps``. A task's own ``train`` stops where it draws its
        minibatches from ``ctx.batches()``; one that never does reports 0 steps.

        On the fast path non-finite parameters are not an error here: the delta is
        written as is and the caller validates it. A task's own optimizer or loop that
        produces NaN/Inf raises instead, naming the task's function.

        Raises:
            ShapeError: ``params`` or ``out`` is not a float32 vector of the spec's size.
            DataError: empty data, wrong example shape, or labels out of range.
            TaskError: the task's code failed, produced NaN, or changed the model.
        """
        self._spec.check(params, "train params")
        self._spec.check(out, "train out")
        if self._mismatch is not None:
            raise TaskError(self._mismatch)
        local = self._client_data(data, f"client {ctx.client_id} train")
        np.copyto(self.flat_np, params)
        self._loop.anchor(params, plan)
        gen = torch.Generator().manual_seed(_shuffle_seed(ctx, self._seeding))
        if self._loop.chain is None or not self.model.training:  # a chain is modeless
            self.model.train()
        mixed = self.precision.start()
        with torch.enable_grad(), self.precision.autocast_forward(self.model):
            if self._fast:
                if self._sgd is not None:
                    plan = self._sgd.plan(plan)
                batches = until(minibatches(local, plan, gen), stop)
                steps, loss_sum, seen = self._loop.run(batches, plan, local.origin, mixed)
                metrics: dict[str, float] = {}
            else:
                steps, loss_sum, seen, metrics = self._run_task(
                    local, plan, ctx, gen, mixed, stop=stop
                )
        metrics.update(mixed.metrics())
        np.subtract(self.flat_np, params, out=out)
        if not self._fast and not np.isfinite(out).all():
            raise TaskError(f"{self._who()} produced NaN/Inf parameters on client {ctx.client_id}")
        if seen:
            metrics.setdefault("train_loss", loss_sum / seen)
        return TrainResult(len(local), steps, metrics)

    def _who(self) -> str:
        fn = self.task.train or self.task.optimizer
        role = "Task.train" if self.task.train is not None else "Task.optimizer"
        return f"{role} {describe(fn)}"

    def _run_task(
        self,
        data: ClientData,
        plan: LocalPlan,
        ctx: ClientContext,
        gen: torch.Generator,
        mixed: MixedPrecision,
        *,
        stop: StopCheck = NEVER_STOP,
    ) -> tuple[int, float, int, dict[str, float]]:
        """A task's own optimizer and/or loop on the bound module."""
        opt = self._optimizer(plan)
        sched = None
        if self.task.scheduler is not None:
            sched = call_user(self.task.scheduler, "Task.scheduler", opt)
        local = LocalTraining(
            ctx.round_idx, ctx.client_id, plan, gen, mixed.optimizer(opt), sched, self._loss,
            data, mixed=mixed, stop=stop,
        )  # fmt: skip
        prox = self._loop.prox_hook(plan)
        if self.task.train is None:
            loss_sum, seen = run_optimizer_loop(self.model, local, prox)
            self._bound.check_bound(self._who())
            return local.steps, loss_sum, seen, {}
        result = call_user(self.task.train, "Task.train", self.model, data.source, local)
        self._bound.check_bound(self._who())
        return local.steps, 0.0, 0, as_metrics(result, self._who())

    def _optimizer(self, plan: LocalPlan) -> torch.optim.Optimizer | FlatSGD:
        params = self._loop.trainable()
        if self._sgd is not None:  # a plain torch.optim.SGD: same arithmetic, flat
            n = self._bound.trainable
            return FlatSGD(params, self.flat[:n], self.grad[:n], self._loop.momentum, self._sgd)
        if self.task.optimizer is not None:
            opt = call_user(self.task.optimizer, "Task.optimizer", params)
            if not isinstance(opt, torch.optim.Optimizer):
                raise TaskError(
                    f"Task.optimizer {describe(self.task.optimizer)} returned "
                    f"{type(opt).__name__}, not a torch.optim.Optimizer"
                )
            return opt
        if plan.optimizer is OptimizerKind.ADAM:
            return torch.optim.Adam(params, lr=plan.lr, weight_decay=plan.weight_decay)
        return torch.optim.SGD(
            params, lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay
        )

    def evaluate(self, params: FloatVector, data: LocalData) -> EvalResult:
        """Metrics of ``params`` on ``data``: the task's ``evaluate``, else mean loss
        and accuracy (array data in batches of 1024).

        Raises:
            ShapeError: ``params`` is not a float32 vector of the spec's size.
            DataError: empty data, wrong example shape, or labels out of range.
            TaskError: the task's ``evaluate`` failed or returned non-numbers.
        """
        self._spec.check(params, "evaluate params")
        local = self._client_data(data, "evaluate")
        np.copyto(self.flat_np, params)
        self.model.eval()
        with torch.no_grad():
            if self.task.evaluate is not None:
                result = call_user(self.task.evaluate, "Task.evaluate", self.model, local.source)
                named = as_metrics(result, f"Task.evaluate {describe(self.task.evaluate)}")
                return EvalResult(
                    loss=named.get("loss", math.nan),
                    accuracy=named.get("accuracy", math.nan),
                    num_examples=len(local),
                    metrics=named,
                )
            try:
                return self._default_eval(local)
            except Exception as exc:
                raise TaskError(
                    f"evaluating on {local.origin} failed: {type(exc).__name__}: {exc}"
                ) from exc

    def _default_eval(self, data: ClientData) -> EvalResult:
        loss_sum, correct, n = 0.0, 0, 0
        for xb, yb in eval_batches(data):
            logits = self.model(xb)
            if self.task.loss is None:
                loss_sum += cross_entropy(logits, yb, reduction="sum").item()
            else:
                loss_sum += float(self._loss(logits, yb).item()) * int(yb.shape[0])
            if logits.ndim == 2 and yb.ndim == 1:
                correct += int((logits.argmax(dim=1) == yb).sum().item())
            n += int(yb.shape[0])
        return EvalResult(loss=loss_sum / n, accuracy=correct / n, num_examples=n)
