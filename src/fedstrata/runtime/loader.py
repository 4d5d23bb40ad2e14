"""Load a :class:`~fedstrata.runtime.build.Deployment` from a configuration.

:func:`deployment` checks the configuration (:func:`~fedstrata.runtime.support.
check_supported`), builds the trainer factory (the model layout and initial weights)
and says where a client's data come from, reading none: with a task (``task:`` in the
config, Issue 14 part 2) a client loads its own, ``task.local_data(DIR)`` for
``fedstrata client --data DIR``, else ``task.client_data(client_id)``, and the center
only ``task.test_data()`` when it evaluates; without a task, every process builds the
config's built-in dataset and a client trains on its partition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fedstrata.builders import build_dataset, resolve_task, trainer_factory
from fedstrata.config import FedConfig
from fedstrata.core.training import LocalData
from fedstrata.errors import ConfigError
from fedstrata.runtime.build import Deployment, LocalSource
from fedstrata.runtime.fedeval_build import split_deployment
from fedstrata.runtime.support import check_supported

if TYPE_CHECKING:
    from fedstrata.torch_adapter import Task

__all__ = ["deployment"]


def deployment(
    config: FedConfig, *, task: Task | str | None = None, data_dir: Path | None = None
) -> Deployment:
    """Build the trainer factory of ``config`` and where a client's data come from.

    Imports torch. Nothing reads data here: with a task, the center never does; a
    client reads its own in :meth:`Deployment.client`.

    Args:
        config: the configuration.
        task: your task object or import string (default: ``config.task``).
        data_dir: this client's data directory, read by ``task.local_data``.

    Raises:
        ConfigError: an unsupported feature, or ``data_dir`` without a task that has
            ``local_data``.
        TaskError: the task cannot be imported.
        DataError: the built-in dataset cannot be built.
    """
    check_supported(config)
    chosen = resolve_task(config, task)
    if chosen is None:
        if data_dir is not None:
            raise ConfigError("--data needs a task with local_data (see docs/tasks.md)")
        dataset = build_dataset(config.data)
        factory = trainer_factory(config, dataset)
        n = dataset.num_clients
        largest = int(dataset.client_sizes().max())
        dep = Deployment(
            config, n, factory, factory(), dataset.client, lambda: dataset.test, largest
        )
        return split_deployment(dep, dataset=dataset)
    factory = trainer_factory(config, None, chosen)
    source = _task_source(chosen, data_dir)
    test = _task_test(chosen)
    dep = Deployment(config, _task_clients(config, chosen), factory, factory(), source, test)
    return split_deployment(dep, task=chosen)


def _task_test(task: Task) -> Callable[[], LocalData] | None:
    """The task's central test set, loaded when first asked for (None without one)."""
    from fedstrata.torch_adapter.data import call_data_fn  # deferred: torch

    load = task.test_data
    if load is None:
        return None
    return lambda: call_data_fn(load)


def _task_clients(config: FedConfig, task: Task) -> int:
    """The federation's size: ``task.num_clients``, else ``data.num_clients``."""
    return task.num_clients if task.num_clients is not None else config.data.num_clients


def _task_source(task: Task, data_dir: Path | None) -> LocalSource:
    from fedstrata.torch_adapter.data import call_data_fn  # deferred: torch

    if data_dir is not None:
        read = task.local_data
        if read is None:
            raise ConfigError(
                f"--data {data_dir}: task {task.name!r} has no local_data(path) to read it"
            )
        return lambda _cid: call_data_fn(read, data_dir)  # type: ignore[arg-type]
    load = task.client_data
    if load is None:
        return _NoData(task.name)  # the center needs none; a client fails at start-up
    return lambda cid: call_data_fn(load, cid)


@dataclass(frozen=True)
class _NoData:
    task_name: str

    def __call__(self, client_id: int) -> LocalData:
        raise ConfigError(
            f"task {self.task_name!r} has no client_data(client_id): give client {client_id} "
            "its data directory with --data DIR (read by the task's local_data)"
        )
