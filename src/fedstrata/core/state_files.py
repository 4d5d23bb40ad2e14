"""The clients' state directory in a checkpoint (Issue 15 part 2).

Error-feedback residuals, secure aggregation's residuals and local model buffers
(FedBN) live as files under one directory (:class:`~fedstrata.core.state.DiskStateStore`)
that the worker processes write while a round runs. A checkpoint taken after round
``r`` must hold them as they were then: a crash in round ``r + 1`` leaves some
already overwritten. :class:`StateDirSnapshot` captures the directory between
rounds and writes it back on a resume.

Capturing is on the round's critical path, so it is incremental: file contents are
cached by (size, mtime_ns, inode) and only the files a round rewrote (its cohort's)
are read again. Memory is the directory's size (every client with state), which is
what a checkpoint of it has to hold.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.statepart import StatePart
from fedstrata.errors import CheckpointCorrupt, CheckpointError

__all__ = ["StateDirSnapshot"]

_Stamp = tuple[int, int, int]


class StateDirSnapshot:
    """Captures and restores the ``*.npy`` files of one state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[_Stamp, NDArray[np.uint8]]] = {}

    def capture(self) -> StatePart:
        """The directory's files now (file name -> bytes as uint8 arrays).

        Raises:
            CheckpointError: a file could not be read.
        """
        seen: dict[str, tuple[_Stamp, NDArray[np.uint8]]] = {}
        for entry in _entries(self.root):
            st = entry.stat()
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
            cached = self._cache.get(entry.name)
            if cached is None or cached[0] != stamp:
                cached = (stamp, _read(Path(entry.path)))
            seen[entry.name] = cached
        self._cache = seen
        names = sorted(seen)
        arrays: dict[str, NDArray[Any]] = {f"f{i}": seen[n][1] for i, n in enumerate(names)}
        return StatePart(meta={"files": names}, arrays=arrays)

    def restore(self, part: StatePart) -> None:
        """Make the directory hold exactly the captured files (others are removed).

        Raises:
            CheckpointCorrupt: a file name in the part is not a plain ``.npy`` name.
            CheckpointError: the directory could not be written.
        """
        names = [str(n) for n in part.value("files")]
        for name in names:
            if Path(name).name != name or not name.endswith(".npy"):
                raise CheckpointCorrupt(f"client state file name {name!r} is not allowed")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for entry in _entries(self.root):
                if entry.name not in names:
                    os.remove(entry.path)
            for i, name in enumerate(names):
                _write(self.root / name, part.array(f"f{i}").tobytes())
        except OSError as exc:
            raise CheckpointError(f"cannot restore client state in {self.root}: {exc}") from exc
        self._cache = {}


def _entries(root: Path) -> list[os.DirEntry[str]]:
    if not root.is_dir():
        return []
    with os.scandir(root) as it:
        return [e for e in it if e.is_file() and e.name.endswith(".npy")]


def _read(path: Path) -> NDArray[np.uint8]:
    try:
        return np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise CheckpointError(f"cannot read client state {path}: {exc}") from exc


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".restore.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
