"""The task API: federate your own PyTorch model, data, loss, optimizer and loop.

A :class:`Task` is a bundle of plain functions the user writes in their own module
(Issue 14 part 1). Only ``model`` is required; everything else has a default:

========================  =========================================================
field                     default when omitted
========================  =========================================================
``model()``               required: returns any ``torch.nn.Module``
``client_data(cid)``      the config's ``data`` section (built-in or npz data)
``num_clients``           required with ``client_data``
``client_sizes()``        every client's example count, read by calling
                          ``client_data`` once per client at start-up
``test_data()``           the config's test set (none with ``client_data``)
``client_test_data(cid)`` client ``cid``'s own held-out data for federated
                          evaluation (default: ``evaluation.holdout`` of its data)
``loss(output, target)``  ``torch.nn.functional.cross_entropy``
``optimizer(params)``     fedstrata's flat in-place SGD from the ``client`` section
``scheduler(optimizer)``  none; stepped after every optimizer step
``train(model, data,      the standard loop: ``client.epochs`` (or ``steps``) over
ctx)``                    minibatches of ``client.batch_size``
``evaluate(model, data)`` mean loss and accuracy
``local_buffers``         ``()``: every floating-point buffer is aggregated
``local_data(path)``      none; a gRPC client's own data, read from the folder
                          ``fedstrata client --data DIR`` names (the center and the
                          simulator never call it)
========================  =========================================================

``client_data`` may return a ``(x, y)`` pair of NumPy arrays or tensors (the fast
path: zero-copy tensors and index-gather minibatches), a ``TensorDataset``, any
map-style ``torch.utils.data.Dataset`` (batched by a seeded ``DataLoader``), or a
``DataLoader`` (used as given).

Parameters and buffers: every parameter (trainable or frozen) and every
floating-point buffer (batch-norm running statistics) is part of the global model
and averaged; integer buffers (``num_batches_tracked``) and the buffers named in
``local_buffers`` (exact names or dotted prefixes, e.g. ``"bn1"``) stay out of the
global model: never sent, never averaged; each worker process's module keeps its own
copy (shared by the clients that process trains; not yet persisted per client).

Randomness: ``model()`` is called under ``torch.manual_seed(seed)`` inside
``torch.random.fork_rng``, so the initial model is the one
``torch.manual_seed(seed); model()`` gives, and the global generator is restored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, final

from fedstrata.core.usercode import describe, import_object
from fedstrata.errors import ConfigError, TaskError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fedstrata.torch_adapter.loops import LocalTraining

__all__ = ["Task", "as_metrics", "resolve_task"]

ModelFn = Callable[[], "nn.Module"]
LossFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
OptimizerFn = Callable[[list["nn.Parameter"]], "torch.optim.Optimizer"]
SchedulerFn = Callable[["torch.optim.Optimizer"], Any]
TrainFn = Callable[["nn.Module", Any, "LocalTraining"], "Mapping[str, float] | None"]
EvalFn = Callable[["nn.Module", Any], Mapping[str, float]]


def _check_callable(field: str, value: object, required: bool = False) -> None:
    if value is None and not required:
        return
    if not callable(value):
        raise ConfigError(f"Task.{field} must be callable, got {type(value).__name__}")


@final
@dataclass(frozen=True, eq=False)
class Task:
    """A user's federated learning task (see the module docstring for each field).

    Built once in the main process; forked worker processes inherit it. Functions
    should be module-level (not lambdas) where the task must be pickled.

    Raises:
        ConfigError: a field is not callable, or ``client_data`` without a
            positive ``num_clients``.
    """

    model: ModelFn
    client_data: Callable[[int], Any] | None = None
    num_clients: int | None = None
    client_sizes: Callable[[], Sequence[int]] | None = None
    test_data: Callable[[], Any] | None = None
    client_test_data: Callable[[int], Any] | None = None
    loss: LossFn | None = None
    optimizer: OptimizerFn | None = None
    scheduler: SchedulerFn | None = None
    train: TrainFn | None = None
    evaluate: EvalFn | None = None
    local_buffers: tuple[str, ...] = ()
    name: str = "task"
    local_data: Callable[[Path], Any] | None = None  # a deployment client's own folder

    def __post_init__(self) -> None:
        _check_callable("model", self.model, required=True)
        names = ("client_data", "client_sizes", "test_data", "client_test_data", "local_data")
        for name in (*names, "loss", "optimizer", "scheduler"):
            _check_callable(name, getattr(self, name))
        _check_callable("train", self.train)
        _check_callable("evaluate", self.evaluate)
        object.__setattr__(self, "local_buffers", tuple(self.local_buffers))
        if self.client_data is not None:
            n = self.num_clients
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError(
                    f"Task.num_clients must be an int >= 1 with client_data, got {n!r}"
                )
        if self.scheduler is not None and self.optimizer is None and self.train is None:
            raise ConfigError("Task.scheduler needs Task.optimizer (a torch.optim optimizer)")

    @property
    def plain_sgd(self) -> bool:
        """True when fedstrata's flat in-place SGD trains this task (the fast path)."""
        return self.optimizer is None and self.train is None


def resolve_task(spec: str, project_dir: Path | None = None) -> Task:
    """The :class:`Task` an import string such as ``my_project.task:CreditRisk`` names.

    Like ``flwr run``, the module is imported with ``project_dir`` (default: the
    current directory) first on ``sys.path``. The attribute may be a :class:`Task`,
    or a callable with no arguments returning one (a class or a function).

    Raises:
        ConfigError: ``spec`` is not ``module:attribute``.
        TaskError: the module cannot be imported (its error is quoted), the attribute
            is missing, calling it fails, or it is not a Task.
    """
    obj = import_object(spec, project_dir, "task")
    if not isinstance(obj, Task) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise TaskError(
                f"task {spec!r}: calling {describe(obj)}() failed: {type(exc).__name__}: {exc}"
            ) from exc
    if not isinstance(obj, Task):
        raise TaskError(
            f"task {spec!r} is a {type(obj).__name__}, not a fedstrata.torch_adapter.Task "
            "(or a callable returning one)"
        )
    return obj


def as_metrics(result: object, who: str) -> dict[str, float]:
    """A task function's named metrics as floats (None means none)."""
    if result is None:
        return {}
    if not isinstance(result, Mapping):
        raise TaskError(f"{who} returned {type(result).__name__}, not a mapping of metrics")
    try:
        return {str(k): float(v) for k, v in result.items()}
    except (TypeError, ValueError) as exc:
        raise TaskError(f"{who} returned a metric that is not a number: {exc}") from None
