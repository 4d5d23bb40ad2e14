"""Minibatches and the local training loops of a task (Issue 14 part 1).

Two loops share :func:`minibatches`:

* the flat loop (:mod:`fedstrata.torch_adapter.trainer`): fedstrata's in-place SGD
  on the flat vectors, for every task without its own optimizer or loop;
* :func:`run_optimizer_loop`: any ``torch.optim`` optimizer (and scheduler) the task
  builds, the standard zero_grad/forward/backward/step loop.

A task's own ``train(model, data, ctx)`` gets a :class:`LocalTraining` context:
the seeded minibatches of this round, the optimizer, scheduler and loss, and the
round and client ids; it may accumulate gradients, clip, stop early.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, final

import torch
from torch import nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader

from fedstrata.core.partial_work import NEVER_STOP, StopCheck
from fedstrata.core.training import LocalPlan
from fedstrata.errors import TaskError
from fedstrata.torch_adapter.data import ClientData, describe_batch
from fedstrata.torch_adapter.precision import MixedPrecision

__all__ = [
    "EVAL_BATCH",
    "Batch",
    "LocalTraining",
    "OptimizerLike",
    "eval_batches",
    "index_batches",
    "minibatches",
    "run_optimizer_loop",
    "until",
]

EVAL_BATCH = 1024

Batch = tuple[torch.Tensor, torch.Tensor]


class OptimizerLike(Protocol):
    """What a training loop uses of an optimizer: a ``torch.optim.Optimizer`` or
    :class:`~fedstrata.torch_adapter.flatsgd.FlatSGD`."""

    param_groups: list[dict[str, Any]]

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self, closure: Any = None) -> Any: ...


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def index_batches(n: int, plan: LocalPlan, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Minibatch index tensors: ``plan.epochs`` epochs or ``plan.steps`` steps.

    Every epoch is a fresh ``torch.randperm``; with ``steps`` the epochs cycle.
    """
    steps_left, epochs_left = plan.steps, plan.epochs
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


def _pair(batch: object, origin: str) -> Batch:
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    raise TaskError(
        f"a batch of {origin} is a {type(batch).__name__}, not an (inputs, targets) pair; "
        "write Task.train (and Task.evaluate) for other batch layouts"
    )


def _loader_batches(data: ClientData, plan: LocalPlan, gen: torch.Generator) -> Iterator[Batch]:
    source = data.source
    loader = source if isinstance(source, DataLoader) else None
    if loader is None:
        loader = DataLoader(source, batch_size=plan.batch_size, shuffle=True, generator=gen)
    steps_left, epochs_left = plan.steps, plan.epochs
    while epochs_left is None or epochs_left > 0:
        seen = False
        for batch in loader:
            seen = True
            if steps_left is not None:
                if steps_left == 0:
                    return
                steps_left -= 1
            yield _pair(batch, data.origin)
        if not seen:
            return
        if epochs_left is not None:
            epochs_left -= 1


def minibatches(data: ClientData, plan: LocalPlan, gen: torch.Generator) -> Iterator[Batch]:
    """This round's minibatches of ``data``: index gathers on tensors, else a DataLoader.

    A ``DataLoader`` the user built is iterated as given (its batch size and sampler);
    a plain ``Dataset`` is batched by a ``DataLoader`` shuffled by ``gen``.
    """
    if data.tensors is None:
        yield from _loader_batches(data, plan, gen)
        return
    x, y = data.tensors
    for idx in index_batches(int(x.shape[0]), plan, gen):
        yield x[idx], y[idx]


def until(batches: Iterator[Batch], stop: StopCheck) -> Iterator[Batch]:
    """``batches`` until ``stop()`` says so (asked before each one: partial work)."""
    for batch in batches:
        if stop():
            return
        yield batch


def default_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, the default loss of a task."""
    return cross_entropy(out, target)


@final
@dataclass(eq=False)
class LocalTraining:
    """What a task's own ``train(model, data, ctx)`` gets for one client and round.

    Attributes:
        round_idx: the round, from 0.
        client_id: the client.
        plan: epochs or steps, batch size, learning rate (the config's ``client``).
        generator: this client's seeded ``torch.Generator`` (shuffling, dropout masks).
        optimizer: the task's optimizer over the trainable parameters (or
            ``torch.optim.SGD``/``Adam`` from the plan); when the task's optimizer is
            a plain ``torch.optim.SGD``, a ``FlatSGD`` with its settings (same
            arithmetic, no ``torch.optim`` object).
        scheduler: the task's scheduler, or None.
        loss: the task's loss (default cross-entropy).
        data: this client's data, normalised.
        steps: minibatches handed out by :meth:`batches` so far.
        mixed: this round's loss scaling (``client.precision: fp16``); use
            :meth:`backward` instead of ``loss.backward()`` to get it. Under fp16
            ``optimizer.step()`` skips a step whose gradients overflowed.
        stop: asked before each minibatch :meth:`batches` hands out; True ends the
            iterator (a deployed client's round deadline: partial work). A loop that
            draws from :meth:`batches` stops by itself; one that iterates its own data
            may ask :meth:`should_stop` between its steps (and count them in ``steps``).
    """

    round_idx: int
    client_id: int
    plan: LocalPlan
    generator: torch.Generator
    optimizer: OptimizerLike
    scheduler: Any
    loss: LossFn
    data: ClientData
    steps: int = field(default=0)
    mixed: MixedPrecision = field(default_factory=lambda: MixedPrecision(None))
    stop: StopCheck = field(default=NEVER_STOP)

    def batches(self) -> Iterator[Batch]:
        """The round's minibatches (``plan.epochs`` epochs or ``plan.steps`` steps),
        ending early when :attr:`stop` says the round's time is up."""
        for batch in until(minibatches(self.data, self.plan, self.generator), self.stop):
            self.steps += 1
            yield batch

    def should_stop(self) -> bool:
        """Whether the round's time is up (for a loop over its own data)."""
        return self.stop()

    def backward(self, loss: torch.Tensor) -> bool:
        """``loss.backward()``, with loss scaling under ``client.precision: fp16``.

        The gradients are unscaled when it returns (clip them as usual); False when
        they are not finite: the next ``optimizer.step()`` is then skipped.
        """
        return self.mixed.backward(loss, self._grads)

    def _grads(self) -> list[torch.Tensor]:
        groups = self.optimizer.param_groups
        return [p.grad for g in groups for p in g["params"] if p.grad is not None]


def run_optimizer_loop(
    model: nn.Module, ctx: LocalTraining, prox: Callable[[], None] | None
) -> tuple[float, int]:
    """The standard loop with a torch optimizer; returns (loss sum, examples seen).

    ``prox`` (FedProx) adds its gradient term after ``backward``.

    Raises:
        TaskError: the forward pass or the loss failed on a batch (names the batch).
    """
    loss_sum, seen = 0.0, 0
    for x, y in ctx.batches():
        ctx.optimizer.zero_grad()
        loss = checked_loss(model, ctx.loss, x, y, ctx.data.origin)
        ctx.backward(loss)
        if prox is not None:
            prox()
        ctx.optimizer.step()
        if ctx.scheduler is not None:
            ctx.scheduler.step()
        loss_sum += float(loss.item()) * int(y.shape[0])
        seen += int(y.shape[0])
    return loss_sum, seen


def checked_loss(
    model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, origin: str
) -> torch.Tensor:
    """``loss_fn(model(x), y)``, with an error naming the data and the batch on failure.

    Raises:
        TaskError: the forward pass or the loss raised.
    """
    try:
        return loss_fn(model(x), y)
    except Exception as exc:
        raise TaskError(
            f"the model's forward pass or loss failed on a batch of {origin} "
            f"({describe_batch(x, y)}): {type(exc).__name__}: {exc}"
        ) from exc


def eval_batches(data: ClientData) -> Iterator[Batch]:
    """Evaluation batches: slices of 1024 on tensors, else the (or a) DataLoader."""
    if data.tensors is not None:
        x, y = data.tensors
        for start in range(0, int(y.shape[0]), EVAL_BATCH):
            yield x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]
        return
    source = data.source
    loader = source if isinstance(source, DataLoader) else DataLoader(source, EVAL_BATCH)
    for batch in loader:
        yield batch[0], batch[1]
