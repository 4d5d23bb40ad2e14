"""Per-client state that outlives a round (error-feedback residuals, clip quantiles).

Clients of a simulation are trained by whichever worker process is free, so their
state lives in a store every worker can reach. :class:`DiskStateStore` keeps one
``.npy`` file per (client, key) under a directory: memory stays O(model) however large
the population, and a crash loses at most the round in flight. Writes are atomic
(temporary file + ``os.replace``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.statepart import StatePart
from fedstrata.errors import CheckpointCorrupt, ConfigError

__all__ = ["ClientStateStore", "DiskStateStore", "MemoryStateStore"]


class ClientStateStore(Protocol):
    """Get and put named arrays per client."""

    def get(self, client_id: int, key: str) -> NDArray[np.generic] | None: ...

    def put(self, client_id: int, key: str, value: NDArray[np.generic]) -> None: ...


class MemoryStateStore:
    """In-process store, for a single process or tests."""

    def __init__(self) -> None:
        self._data: dict[tuple[int, str], NDArray[np.generic]] = {}

    def get(self, client_id: int, key: str) -> NDArray[np.generic] | None:
        return self._data.get((client_id, key))

    def put(self, client_id: int, key: str, value: NDArray[np.generic]) -> None:
        self._data[(client_id, key)] = np.array(value, copy=True)

    def state_dict(self) -> StatePart:
        """Every client's arrays (copies: :meth:`get` hands out the stored ones)."""
        keys = sorted(self._data)
        arrays = {f"a{i}": self._data[k].copy() for i, k in enumerate(keys)}
        return StatePart(meta={"keys": [[c, k] for c, k in keys]}, arrays=arrays)

    def load_state_dict(self, part: StatePart) -> None:
        """Replace the contents with a :meth:`state_dict`'s."""
        keys = part.value("keys")
        self._data = {(int(c), str(k)): part.array(f"a{i}") for i, (c, k) in enumerate(keys)}


class DiskStateStore:
    """One ``.npy`` file per (client, key) under ``root``; safe across processes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, client_id: int, key: str) -> Path:
        if not key.isidentifier():
            raise ConfigError(f"DiskStateStore key must be an identifier, got {key!r}")
        return self.root / f"{key}-{client_id}.npy"

    def get(self, client_id: int, key: str) -> NDArray[np.generic] | None:
        path = self._path(client_id, key)
        if not path.exists():
            return None
        try:
            value: NDArray[np.generic] = np.load(path, allow_pickle=False)
            return value
        except (ValueError, OSError, EOFError) as exc:
            raise CheckpointCorrupt(f"client state {path} is unreadable: {exc}") from exc

    def put(self, client_id: int, key: str, value: NDArray[np.generic]) -> None:
        path = self._path(client_id, key)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, value, allow_pickle=False)
        os.replace(tmp, path)
