"""A federated dataset: one base training set, per-client index ranges, a test set.

Memory stays O(data) whatever the number of clients: the clients' examples are not
copied; client ``i`` is the rows ``index[offsets[i]:offsets[i + 1]]`` of the base
training set (a CSR-style layout: one index array plus ``num_clients + 1``
offsets, so even a million clients cost two arrays, not a million objects, and the
dataset pickles to worker processes quickly). :meth:`FederatedDataset.client`
gathers a client's rows on demand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.training import ArrayDataset
from fedstrata.errors import ConfigError, DataError

__all__ = ["FederatedDataset", "client_test_split"]

IndexArray = NDArray[np.intp]


@dataclass(frozen=True, eq=False)
class FederatedDataset:
    """Clients' training data as index ranges into one base set, plus a test set.

    Build one from a partition with :meth:`from_partition`.

    Attributes:
        train: the base training set every client indexes into (x float32, y int64).
        index: concatenated client index arrays (rows of ``train``).
        offsets: ``num_clients + 1`` non-decreasing offsets into ``index``; client
            ``i`` owns ``index[offsets[i]:offsets[i + 1]]``.
        test: the centralised evaluation set.
        num_classes: number of label values; labels lie in ``[0, num_classes)``.
        input_shape: shape of one example (``x.shape[1:]``).
        name: a human-readable name (e.g. ``"digits"``).
    """

    train: ArrayDataset
    index: IndexArray
    offsets: IndexArray
    test: ArrayDataset
    num_classes: int
    input_shape: tuple[int, ...]
    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        self._check_layout()
        for part, ds in (("train", self.train), ("test", self.test)):
            _check_part(part, ds, self.input_shape, self.num_classes)

    def _check_layout(self) -> None:
        if self.num_classes < 1:
            raise DataError(f"FederatedDataset.num_classes must be >= 1, got {self.num_classes}")
        if self.index.ndim != 1 or self.index.dtype.kind not in "iu":
            raise DataError("FederatedDataset.index must be a 1-D integer array")
        off = self.offsets
        if off.ndim != 1 or off.shape[0] < 2 or off.dtype.kind not in "iu":
            raise DataError("FederatedDataset.offsets must be a 1-D integer array of >= 2 items")
        if off[0] != 0 or off[-1] != self.index.shape[0] or np.any(np.diff(off) < 0):
            raise DataError(
                "FederatedDataset.offsets must start at 0, be non-decreasing and end at "
                f"len(index)={self.index.shape[0]}"
            )
        n = len(self.train)
        if self.index.size and (self.index.min() < 0 or self.index.max() >= n):
            raise DataError(f"FederatedDataset.index has rows outside [0, {n})")

    @classmethod
    def from_partition(
        cls,
        train: ArrayDataset,
        parts: Sequence[NDArray[np.integer]],
        test: ArrayDataset,
        num_classes: int,
        name: str,
    ) -> FederatedDataset:
        """Build from per-client index arrays (e.g. the output of a partition function).

        Raises:
            DataError: no clients, bad indices, or inconsistent train/test data.
        """
        if len(parts) == 0:
            raise DataError("FederatedDataset.from_partition: parts is empty (no clients)")
        sizes = np.fromiter((len(p) for p in parts), dtype=np.intp, count=len(parts))
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.intp)
        index = np.concatenate([np.asarray(p, dtype=np.intp).reshape(-1) for p in parts])
        input_shape = tuple(int(d) for d in train.x.shape[1:])
        return cls(train, index, offsets, test, num_classes, input_shape, name)

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return int(self.offsets.shape[0] - 1)

    def client_sizes(self) -> NDArray[np.intp]:
        """Number of training examples of every client, shape ``(num_clients,)``."""
        return np.diff(self.offsets)

    def client_indices(self, client_id: int) -> IndexArray:
        """Rows of :attr:`train` owned by ``client_id`` (a read-only view).

        Raises:
            DataError: ``client_id`` is not an int in ``[0, num_clients)``.
        """
        i = self._check_id(client_id)
        view = self.index[self.offsets[i] : self.offsets[i + 1]]
        view.flags.writeable = False
        return view

    def client(self, client_id: int) -> ArrayDataset:
        """The training examples of ``client_id`` (gathered into new arrays).

        Raises:
            DataError: ``client_id`` is not an int in ``[0, num_clients)``.
        """
        return self.train.subset(self.client_indices(client_id))

    def _check_id(self, client_id: int) -> int:
        if isinstance(client_id, bool) or not isinstance(client_id, int | np.integer):
            raise DataError(f"client id must be an int, got {client_id!r}")
        if not 0 <= client_id < self.num_clients:
            raise DataError(
                f"client id {client_id} out of range [0, {self.num_clients}) "
                f"for dataset {self.name!r}"
            )
        return int(client_id)


def _check_part(part: str, ds: ArrayDataset, shape: tuple[int, ...], classes: int) -> None:
    if tuple(ds.x.shape[1:]) != shape:
        raise DataError(
            f"FederatedDataset.{part}: examples have shape {tuple(ds.x.shape[1:])}, "
            f"expected input_shape {shape}"
        )
    if len(ds) and (ds.y.min() < 0 or ds.y.max() >= classes):
        raise DataError(
            f"FederatedDataset.{part}: labels must lie in [0, {classes}), "
            f"got [{ds.y.min()}, {ds.y.max()}]"
        )


def holdout_split(
    index: IndexArray, offsets: IndexArray, test_fraction: float, rng: np.random.Generator
) -> tuple[IndexArray, IndexArray, IndexArray, IndexArray]:
    """Split every client's rows into a training part and a held-out part.

    Client ``c`` with ``n_c`` examples holds out ``min(floor(test_fraction * n_c),
    n_c - 1)`` of them, chosen uniformly at random, so every client keeps at least
    one training example and clients with few examples may hold out none. Both parts
    keep the original order of the rows.

    Returns:
        ``(train_index, train_offsets, test_index, test_offsets)`` in the CSR layout
        of :class:`FederatedDataset`.

    Raises:
        ConfigError: ``test_fraction`` outside ``[0, 1)``.
    """
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    sizes = np.diff(offsets)
    owner = np.repeat(np.arange(sizes.shape[0]), sizes)
    order = np.lexsort((rng.random(size=(index.shape[0],)), owner))
    rank = np.arange(index.shape[0]) - np.repeat(offsets[:-1], sizes)
    n_test = np.minimum(np.floor(test_fraction * sizes).astype(np.intp), np.maximum(sizes - 1, 0))
    is_test = np.empty(index.shape[0], dtype=bool)
    is_test[order] = rank < np.repeat(n_test, sizes)
    train_off = np.concatenate(([0], np.cumsum(sizes - n_test))).astype(np.intp)
    test_off = np.concatenate(([0], np.cumsum(n_test))).astype(np.intp)
    return index[~is_test], train_off, index[is_test], test_off


def client_test_split(
    dataset: FederatedDataset, test_fraction: float, rng: np.random.Generator
) -> tuple[FederatedDataset, FederatedDataset]:
    """Per-client evaluation: split each client's examples into train and test parts.

    Both returned datasets share ``dataset.train`` (no copy) and ``dataset.test``;
    client ``i`` of the first holds its training part and client ``i`` of the second
    its held-out part (see :func:`holdout_split` for the rule; a held-out part may be
    empty for clients with fewer than ``1 / test_fraction`` examples).

    Raises:
        ConfigError: ``test_fraction`` outside ``[0, 1)``.
    """
    tr_idx, tr_off, te_idx, te_off = holdout_split(
        dataset.index, dataset.offsets, test_fraction, rng
    )
    common = (dataset.test, dataset.num_classes, dataset.input_shape)
    train = FederatedDataset(dataset.train, tr_idx, tr_off, *common, f"{dataset.name}/train")
    held = FederatedDataset(dataset.train, te_idx, te_off, *common, f"{dataset.name}/heldout")
    return train, held
