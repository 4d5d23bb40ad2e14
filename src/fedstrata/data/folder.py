"""Users' own federated data: a folder of ``client_*.npz`` files.

Layout::

    my_data/
        client_0.npz     arrays x (n, ...) numeric, y (n,) integer labels >= 0
        client_1.npz
        ...
        test.npz         optional; same arrays, the centralised test set

Clients are ordered by the numeric suffix of their file name (``client_2`` before
``client_10``; non-numeric suffixes sort after, by name); client ``i`` of the
returned dataset is the ``i``-th file in that order. Without ``test.npz`` a
``test_fraction`` of each client's examples is held out (``min(floor(test_fraction *
n_c), n_c - 1)`` examples chosen at random with ``seed``, so every client keeps at
least one training example) and the held-out examples form the test set.

Every problem raises :class:`~fedstrata.errors.DataError` naming the file and what is
wrong: an empty folder, an unreadable file, missing ``x`` or ``y``, mismatched
lengths, non-integer or negative labels, NaN/Inf features, feature shapes that differ
between files.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.training import ArrayDataset
from fedstrata.data.federated import FederatedDataset, holdout_split
from fedstrata.errors import DataError

__all__ = ["load_npz_folder"]

logger = logging.getLogger(__name__)

CLIENT_GLOB = "client_*.npz"
TEST_FILE = "test.npz"


def _client_order(path: Path) -> tuple[int, int, str]:
    suffix = path.stem.removeprefix("client_")
    return (0, int(suffix), "") if suffix.isdigit() else (1, 0, suffix)


def _read_npz(path: Path) -> tuple[NDArray[np.generic], NDArray[np.generic]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x", "y") if k not in npz.files]
            if missing:
                raise DataError(f"{path.name}: missing array(s) {missing}; found {npz.files}")
            return npz["x"], npz["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path.name}: not a readable .npz file ({exc})") from exc


def _check_x(path: Path, x: NDArray[np.generic]) -> NDArray[np.float32]:
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path.name}: x must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(f"{path.name}: x must have shape (n, features...), got {x.shape}")
    xf = x.astype(np.float32, copy=False)
    if not np.isfinite(xf).all():
        raise DataError(f"{path.name}: x contains NaN or Inf values")
    return xf


def _check_y(path: Path, y: NDArray[np.generic]) -> NDArray[np.int64]:
    if y.ndim != 1:
        raise DataError(f"{path.name}: y must be 1-D, got shape {y.shape}")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and np.array_equal(y, np.round(y))):
            raise DataError(f"{path.name}: y holds non-integer labels")
    elif y.dtype.kind not in "iu":
        raise DataError(f"{path.name}: y must hold integer labels, got dtype {y.dtype}")
    y64 = y.astype(np.int64)
    if y64.size and y64.min() < 0:
        raise DataError(f"{path.name}: labels must be >= 0, got {y64.min()}")
    return y64


def _load_file(path: Path, shape: tuple[int, ...] | None) -> ArrayDataset:
    """Read and validate one file; ``shape`` is the expected example shape, if known."""
    x_raw, y_raw = _read_npz(path)
    x, y = _check_x(path, x_raw), _check_y(path, y_raw)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{path.name}: x has {x.shape[0]} examples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise DataError(f"{path.name}: holds no examples")
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise DataError(
            f"{path.name}: examples have shape {tuple(x.shape[1:])}, but earlier files "
            f"have {shape}"
        )
    return ArrayDataset(x=x, y=y)


def _load_clients(files: list[Path]) -> list[ArrayDataset]:
    clients: list[ArrayDataset] = []
    for f in files:
        shape = tuple(clients[0].x.shape[1:]) if clients else None
        clients.append(_load_file(f, shape))
    return clients


def _concatenate(clients: list[ArrayDataset]) -> tuple[ArrayDataset, NDArray[np.intp]]:
    """One base dataset holding every client's rows, and the clients' offsets."""
    sizes = np.array([len(c) for c in clients], dtype=np.intp)
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.intp)
    x = np.concatenate([c.x for c in clients])
    return ArrayDataset(x=x, y=np.concatenate([c.y for c in clients])), offsets


def load_npz_folder(
    path: str | Path, test_fraction: float = 0.2, seed: int = 0
) -> FederatedDataset:
    """Load a folder of ``client_*.npz`` files (and an optional ``test.npz``).

    Args:
        path: the folder.
        test_fraction: share of each client's examples held out as the test set when
            the folder has no ``test.npz`` (ignored otherwise).
        seed: seed of that hold-out draw.

    Returns:
        A dataset named after the folder; ``num_classes`` is one more than the largest
        label found in any file.

    Raises:
        DataError: the folder is missing or empty, or a file is unreadable or invalid.
        ConfigError: ``test_fraction`` outside ``[0, 1)`` (when it is used).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"npz folder {str(folder)!r} does not exist or is not a directory")
    files = sorted(folder.glob(CLIENT_GLOB), key=_client_order)
    if not files:
        raise DataError(f"npz folder {str(folder)!r} holds no {CLIENT_GLOB} files")
    clients = _load_clients(files)
    shape = tuple(int(d) for d in clients[0].x.shape[1:])
    base, offsets = _concatenate(clients)
    index = np.arange(base.y.shape[0], dtype=np.intp)
    test_path = folder / TEST_FILE
    if test_path.exists():
        test = _load_file(test_path, shape)
    else:
        logger.info(
            "%s: no %s, holding out %.0f%% per client", folder, TEST_FILE, 100 * test_fraction
        )
        index, offsets, held, _ = holdout_split(
            index, offsets, test_fraction, np.random.default_rng(seed)
        )
        test = base.subset(held)
    num_classes = int(max(base.y.max(), test.y.max() if len(test) else 0)) + 1
    return FederatedDataset(base, index, offsets, test, num_classes, shape, folder.name)
