"""Is a task's optimizer plain SGD? Then the flat fast path trains it (Issue 14 part 1).

:func:`plain_sgd` calls the task's ``optimizer`` factory once, on a fresh module's
trainable parameters, and reads the result: ``torch.optim.SGD`` with a single group
holding every trainable parameter, no dampening, Nesterov or maximize, is exactly
the arithmetic of fedstrata's flat in-place SGD (bit for bit), so such a task trains
on the fast path with the optimizer's ``lr``, ``momentum`` and ``weight_decay``.

The first construction of any ``torch.optim`` optimizer in a process imports
``torch._dynamo`` (about 1-2 s): ``Optimizer.add_param_group`` (like ``zero_grad``,
``state_dict`` and ``load_state_dict``) is wrapped by ``torch._disable_dynamo``,
whose wrapper imports ``torch._dynamo`` on its first call to build the
``torch._dynamo.disable`` version of the method, and caches that on the raw method
(attribute ``__dynamo_disable``). The probe runs inside :func:`skip_dynamo_import`,
which caches the raw method itself for the duration instead, so probing costs
milliseconds and a plain-SGD task never imports ``torch._dynamo`` at all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from fedstrata.core.training import LocalPlan, OptimizerKind
from fedstrata.core.usercode import describe
from fedstrata.errors import TaskError
from fedstrata.torch_adapter.binding import build_module
from fedstrata.torch_adapter.task import Task

__all__ = ["SgdSettings", "plain_sgd", "skip_dynamo_import"]

_CACHE_ATTR = "__dynamo_disable"  # where torch._disable_dynamo's wrapper caches (torch 2.x)


@dataclass(frozen=True)
class SgdSettings:
    """The hyperparameters of a plain ``torch.optim.SGD``."""

    lr: float
    momentum: float
    weight_decay: float

    def plan(self, plan: LocalPlan) -> LocalPlan:
        """``plan`` with this optimizer's hyperparameters (epochs, steps, batch kept)."""
        return LocalPlan(
            batch_size=plan.batch_size, lr=self.lr, epochs=plan.epochs, steps=plan.steps,
            optimizer=OptimizerKind.SGD, momentum=self.momentum,
            weight_decay=self.weight_decay, prox_mu=plan.prox_mu,
        )  # fmt: skip


def plain_sgd(task: Task) -> SgdSettings | None:
    """The SGD settings when ``task`` trains with a plain ``torch.optim.SGD``, else None.

    None too for tasks with a scheduler (it needs the real optimizer object). A task
    with its own loop then gets a :class:`~fedstrata.torch_adapter.flatsgd.FlatSGD`.

    Raises:
        TaskError: the model or optimizer factory failed.
    """
    if task.optimizer is None or task.scheduler is not None:
        return None
    params = [p for p in build_module(task.model, 0).parameters() if p.requires_grad]
    try:
        with skip_dynamo_import():
            opt = task.optimizer(params)
    except Exception as exc:
        raise TaskError(
            f"Task.optimizer {describe(task.optimizer)} raised {type(exc).__name__}: {exc}"
        ) from exc
    if type(opt) is not torch.optim.SGD or len(opt.param_groups) != 1:
        return None
    group = opt.param_groups[0]
    same = len(group["params"]) == len(params) and all(
        a is b for a, b in zip(group["params"], params, strict=True)
    )
    plain = not (group["nesterov"] or group["maximize"] or group["dampening"])
    if not (same and plain) or group.get("differentiable") or group.get("fused"):
        return None
    lr = group["lr"]
    if isinstance(lr, torch.Tensor) or not float(lr) > 0:
        return None
    return SgdSettings(float(lr), float(group["momentum"]), float(group["weight_decay"]))


@contextmanager
def skip_dynamo_import() -> Iterator[bool]:
    """Within the block, ``torch.optim.Optimizer``'s methods do not import ``torch._dynamo``.

    Each method of ``Optimizer`` wrapped by ``torch._disable_dynamo`` gets its own raw
    function as the wrapper's cached "disabled" version, so a call runs the method
    as is. That is what the method does in eager mode anyway: ``torch._dynamo.disable``
    only matters while ``torch.compile`` traces, and nothing compiles in a process
    that has not imported ``torch._dynamo``. On exit the cache is removed again
    (unless something replaced it), so later calls, compiled or not, behave as
    without this block. Nothing is changed when ``torch._dynamo`` is already
    imported, or when this torch lacks ``torch._compile._disable_dynamo`` (the
    methods then import ``torch._dynamo`` as usual). Not for use while another
    thread may start ``torch.compile``.

    Yields:
        Whether any method was changed.
    """
    raws = [] if "torch._dynamo" in sys.modules else _disable_dynamo_methods()
    patched = [raw for raw in raws if getattr(raw, _CACHE_ATTR, None) is None]
    for raw in patched:
        setattr(raw, _CACHE_ATTR, raw)
    try:
        yield bool(patched)
    finally:
        for raw in patched:
            if getattr(raw, _CACHE_ATTR, None) is raw:
                delattr(raw, _CACHE_ATTR)


def _disable_dynamo_methods() -> list[Callable[..., Any]]:
    """The raw functions behind ``Optimizer``'s ``torch._disable_dynamo`` wrappers.

    A wrapper is recognised by its code object (the one every ``_disable_dynamo``
    wrapper shares); none when this torch has no such helper.
    """
    disable = getattr(getattr(torch, "_compile", None), "_disable_dynamo", None)
    if not callable(disable):
        return []
    try:
        code = disable(_noop).__code__
    except (AttributeError, TypeError):
        return []
    raws = []
    for method in vars(torch.optim.Optimizer).values():
        raw = getattr(method, "__wrapped__", None)
        if getattr(method, "__code__", None) is code and callable(raw):
            raws.append(raw)
    return raws


def _noop() -> None:
    """A function to wrap, to find the code of ``torch._disable_dynamo``'s wrapper."""
