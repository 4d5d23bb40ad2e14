"""A task's per-client data, normalised for the trainer (Issue 14 part 1).

:func:`client_data` turns what a user's ``client_data(cid)`` returned into a
:class:`ClientData`: ``(x, y)`` arrays or tensors and ``TensorDataset`` become two
tensors (the fast path: zero-copy, index-gather minibatches); any other map-style
``Dataset`` or a ``DataLoader`` is kept as given. :class:`TaskPopulation` is the
task's clients as the simulator sees them (:class:`fedstrata.core.ClientPopulation`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, final

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader, Dataset, TensorDataset

from fedstrata.core.training import ArrayDataset, ClientPopulation, LocalData
from fedstrata.core.usercode import describe
from fedstrata.errors import DataError, TaskError
from fedstrata.torch_adapter.task import Task

log = logging.getLogger(__name__)

__all__ = [
    "ClientData",
    "FirstExample",
    "TaskPopulation",
    "call_data_fn",
    "client_data",
    "describe_batch",
]


@final
@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's data: tensors (fast path) or the user's Dataset/DataLoader.

    Attributes:
        source: what the user's function returned (handed to a custom ``train``).
        tensors: ``(x, y)`` when the data are two aligned tensors, else None.
        num_examples: examples the client holds (its FedAvg weight).
        origin: where it came from, for messages (``"my.task.load(3)"``).
    """

    source: Any
    tensors: tuple[torch.Tensor, torch.Tensor] | None
    num_examples: int
    origin: str

    def __len__(self) -> int:
        return self.num_examples


def describe_batch(x: object, y: object) -> str:
    """``x: shape (8, 64) float32, y: shape (8,) int64`` for error messages."""

    def one(v: object) -> str:
        shape, dtype = getattr(v, "shape", None), getattr(v, "dtype", None)
        if shape is None:
            return type(v).__name__
        return f"shape {tuple(shape)} {str(dtype).removeprefix('torch.')}"

    return f"x: {one(x)}, y: {one(y)}"


def _as_tensor(value: object, what: str, origin: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype.kind not in "fiub":
        raise TaskError(
            f"{origin} returned {what} of dtype {array.dtype}; expected numbers "
            "(float32 features, int64 labels)"
        )
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array).copy()
    return torch.from_numpy(array)


def _pair(x: object, y: object, origin: str) -> tuple[torch.Tensor, torch.Tensor]:
    xt, yt = _as_tensor(x, "x", origin), _as_tensor(y, "y", origin)
    if not yt.is_floating_point() and yt.dtype != torch.int64:
        yt = yt.long()  # class ids: what the losses index with
    if xt.ndim == 0 or yt.ndim == 0 or xt.shape[0] != yt.shape[0]:
        raise TaskError(
            f"{origin} returned x and y with different numbers of examples "
            f"({describe_batch(xt, yt)})"
        )
    return xt, yt


def client_data(raw: object, origin: str) -> ClientData:
    """Normalise what a user's data function returned.

    Raises:
        TaskError: not arrays, a Dataset or a DataLoader; x and y of different
            lengths; non-numeric dtypes.
    """
    if isinstance(raw, ClientData):
        return raw
    if isinstance(raw, ArrayDataset):
        raw = (raw.x, raw.y)
    if isinstance(raw, tuple | list) and len(raw) == 2:
        xt, yt = _pair(raw[0], raw[1], origin)
        return ClientData(raw, (xt, yt), int(xt.shape[0]), origin)
    if isinstance(raw, TensorDataset) and len(raw.tensors) == 2:
        xt, yt = raw.tensors
        return ClientData(raw, (xt, yt), int(xt.shape[0]), origin)
    if isinstance(raw, DataLoader):
        return ClientData(raw, None, _length(raw.dataset, origin), origin)
    if isinstance(raw, Dataset):
        return ClientData(raw, None, _length(raw, origin), origin)
    raise TaskError(
        f"{origin} returned {type(raw).__name__}; expected (x, y) arrays or tensors, a "
        "torch.utils.data.Dataset or a DataLoader"
    )


def _length(dataset: object, origin: str) -> int:
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TaskError(
            f"{origin} returned an iterable Dataset without __len__; fedstrata needs each "
            "client's number of examples (use a map-style Dataset)"
        ) from None


def call_data_fn(fn: Callable[..., object], *args: int) -> ClientData:
    """Call a user data function and normalise its result (errors name ``fn``)."""
    origin = f"{describe(fn)}({', '.join(map(str, args))})"
    try:
        raw = fn(*args)
    except Exception as exc:
        raise TaskError(f"{origin} raised {type(exc).__name__}: {exc}") from exc
    return client_data(raw, origin)


@final
class TaskPopulation:
    """A task's clients: ``client_data(cid)`` for ``cid`` in ``[0, num_clients)``.

    Implements :class:`fedstrata.core.ClientPopulation`. Client sizes are read once
    (every client's data is loaded once, in the main process) and cached.
    """

    def __init__(self, task: Task) -> None:
        """Wrap ``task``'s ``client_data``.

        Raises:
            TaskError: the task has no ``client_data`` (it uses the config's data).
        """
        if task.client_data is None or task.num_clients is None:
            raise TaskError(f"task {task.name!r} has no client_data: it uses the config's data")
        self._task = task
        self._load = task.client_data
        self._n = task.num_clients
        self._sizes: NDArray[np.intp] | None = None
        self._test: _Lazy = _Lazy(task.test_data)
        self.name = task.name

    @property
    def num_clients(self) -> int:
        return self._n

    @property
    def test(self) -> LocalData | None:
        """The task's central test set, or None without ``test_data``."""
        return self._test.get()

    def client(self, client_id: int) -> ClientData:
        """Client ``client_id``'s data.

        Raises:
            DataError: ``client_id`` outside ``[0, num_clients)``.
            TaskError: the user's function failed or returned unusable data.
        """
        if isinstance(client_id, bool) or not 0 <= int(client_id) < self._n:
            raise DataError(f"client id {client_id} out of range [0, {self._n})")
        return call_data_fn(self._load, int(client_id))

    def client_sizes(self) -> NDArray[np.intp]:
        """Every client's number of examples (loads each client's data once).

        The task's ``client_sizes()`` when it has one (no data are loaded), else each
        client's data are loaded once. A client whose data cannot be loaded counts 0
        examples (a WARNING names the clients and the first reason); it will fail when
        selected, alone.

        Raises:
            TaskError: no client's data could be loaded (the first error), or
                ``client_sizes()`` failed or returned the wrong number of sizes.
        """
        if self._sizes is None and self._task.client_sizes is not None:
            self._sizes = self._declared_sizes(self._task.client_sizes)
        if self._sizes is None:
            sizes, failed = np.zeros(self._n, dtype=np.intp), []
            for c in range(self._n):
                try:
                    sizes[c] = len(self.client(c))
                except TaskError as exc:
                    failed.append((c, exc))
            if len(failed) == self._n:
                raise failed[0][1]
            if failed:
                log.warning(
                    "the data of %d of %d clients could not be loaded (clients %s; e.g. %s); "
                    "they will fail when selected",
                    len(failed), self._n, ", ".join(str(c) for c, _ in failed[:10]), failed[0][1],
                )  # fmt: skip
            self._sizes = sizes
        return self._sizes

    def _declared_sizes(self, fn: Callable[[], object]) -> NDArray[np.intp]:
        who = f"Task.client_sizes {describe(fn)}"
        try:
            sizes = np.asarray(fn(), dtype=np.intp)
        except Exception as exc:
            raise TaskError(f"{who} raised {type(exc).__name__}: {exc}") from exc
        if sizes.shape != (self._n,) or (sizes < 0).any():
            raise TaskError(f"{who} returned shape {sizes.shape}; expected {self._n} counts >= 0")
        return sizes


@dataclass(eq=False)
class _Lazy:
    fn: Callable[[], object] | None
    value: ClientData | None = field(default=None)

    def get(self) -> ClientData | None:
        if self.fn is not None and self.value is None:
            self.value = call_data_fn(self.fn)
        return self.value


@final
@dataclass(frozen=True, eq=False)
class FirstExample:
    """The first example of client 0 as a batch of one (to count a model's FLOPs)."""

    population: ClientPopulation

    def __call__(self) -> torch.Tensor:
        data = client_data(self.population.client(0), "client 0")
        if data.tensors is not None:
            return data.tensors[0][:1]
        source = data.source
        dataset = source.dataset if isinstance(source, DataLoader) else source
        x = dataset[0][0]
        return (x if isinstance(x, torch.Tensor) else torch.as_tensor(x)).unsqueeze(0)
