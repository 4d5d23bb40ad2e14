"""Is a task's optimizer plain SGD? Then the flat fast path trains it (Issue 14 part 1).

:func:`plain_sgd` calls the task's ``optimizer`` factory once, on a fresh module's
trainable parameters, and reads the result: ``torch.optim.SGD`` with a single group
holding every trainable parameter, no dampening, Nesterov or maximize, is exactly
the arithmetic of fedstrata's flat in-place SGD (bit for bit), so such a task trains
on the fast path with the optimizer's ``lr``, ``momentum`` and ``weight_decay``.

The first construction of any ``torch.optim`` optimizer in a process imports
``torch._dynamo`` (about 2 s); the runner therefore probes in a forked child
(:class:`fedstrata.sim.prefetch.Prefetch`-style) while the main process loads the
task's data, and a plain-SGD task never pays that import at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedstrata.core.training import LocalPlan, OptimizerKind
from fedstrata.core.usercode import describe
from fedstrata.errors import TaskError
from fedstrata.torch_adapter.binding import build_module
from fedstrata.torch_adapter.task import Task

__all__ = ["SgdSettings", "plain_sgd"]


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
