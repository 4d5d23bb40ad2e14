"""File-backed checkpoint stores: the disk tier and, over fsspec, the object tier.

Both tiers share :class:`FileStore`; they differ only in their :class:`Blobs` backend
(how bytes are written, renamed, read, listed and deleted). A save writes the whole
checkpoint (header + blob, see :mod:`fedstrata.checkpoint.format`) under a temporary
name, then commits it with one rename; a crash between the two leaves a temporary that
is never listed and is swept by the next save. Readers check every checkpoint's
SHA-256, so a torn or bit-flipped file is never restored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from fedstrata.checkpoint.format import (
    HEAD_BYTES,
    CheckpointInfo,
    checkpoint_key,
    decode,
    encode_header,
    parse_header,
    round_of_key,
    round_of_temp_key,
    temp_key,
)
from fedstrata.checkpoint.store import _blob_bytes, check_keep, newest_good
from fedstrata.errors import CheckpointCorrupt, CheckpointError

__all__ = ["Blobs", "DiskBlobs", "FileStore"]

_log = logging.getLogger(__name__)


class Blobs(Protocol):
    """Named byte strings in one directory or prefix (no secrets in ``url``)."""

    url: str

    def write_temp(self, key: str, chunks: Sequence[bytes]) -> None:
        """Write ``chunks`` durably under the temporary name ``key``."""

    def commit(self, temp: str, key: str) -> None:
        """Rename ``temp`` to ``key`` so that readers see all of it or nothing."""

    def read(self, key: str) -> bytes:
        """All of ``key`` (FileNotFoundError when absent)."""

    def read_head(self, key: str, size: int) -> bytes:
        """The first ``size`` bytes of ``key`` (fewer if it is shorter)."""

    def names(self) -> list[str]:
        """Every name held (committed and temporary), in no particular order."""

    def delete(self, key: str) -> None:
        """Remove ``key``; absent is not an error."""


class DiskBlobs:
    """A local directory; commits with ``os.replace`` after fsyncing file and directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _fsync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_temp(self, key: str, chunks: Sequence[bytes]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / key, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())

    def commit(self, temp: str, key: str) -> None:
        os.replace(self.root / temp, self.root / key)
        self._fsync_dir()

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def read_head(self, key: str, size: int) -> bytes:
        with open(self.root / key, "rb") as handle:
            return handle.read(size)

    def names(self) -> list[str]:
        try:
            return os.listdir(self.root)
        except FileNotFoundError:
            return []

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class FileStore:
    """A checkpoint store over a :class:`Blobs` backend (disk or object tier).

    Not safe for two writers on one location at once; any number of readers is fine
    (a standby reading while the active center writes).
    """

    def __init__(self, tier: str, blobs: Blobs, keep: int | None = None) -> None:
        self.tier = tier
        self.blobs = blobs
        self.url = blobs.url
        self.keep = check_keep(keep)

    def __repr__(self) -> str:
        return f"FileStore({self.tier!r}, {self.url!r}, keep={self.keep})"

    def _io(self, what: str, exc: Exception) -> CheckpointError:
        return CheckpointError(f"{self.tier} tier at {self.url}: {what} failed: {exc}")

    def save(self, round_num: int, blob: bytes) -> CheckpointInfo:
        """Write round ``round_num`` atomically, then apply retention.

        Raises:
            CheckpointError: the write or the rename failed (nothing partial is left
                under the committed name).
        """
        key = checkpoint_key(round_num)
        data = _blob_bytes(blob)
        digest = hashlib.sha256(data).hexdigest()
        info = CheckpointInfo(round_num, self.tier, key, len(data), digest, time.time())
        temp = temp_key(round_num, secrets.token_hex(8))
        try:
            self.blobs.write_temp(temp, [encode_header(info), data])
            self.blobs.commit(temp, key)
        except OSError as exc:
            self._forget(temp)
            raise self._io(f"saving round {round_num}", exc) from exc
        self._retain()
        return info

    def _forget(self, name: str) -> None:
        try:
            self.blobs.delete(name)
        except OSError as exc:
            _log.warning("%s: could not remove %s: %s", self.url, name, exc)

    def _names(self) -> list[str]:
        try:
            return self.blobs.names()
        except OSError as exc:
            raise self._io("listing", exc) from exc

    def _retain(self) -> None:
        names = self._names()
        rounds = sorted(r for r in map(round_of_key, names) if r is not None)
        for old in rounds[: -self.keep]:
            self._forget(checkpoint_key(old))
        newest = rounds[-1] if rounds else -1
        for name in names:
            temp_round = round_of_temp_key(name)
            if temp_round is not None and temp_round <= newest:
                self._forget(name)  # a write that crashed before its rename

    def _read(self, key: str) -> bytes:
        try:
            return self.blobs.read(key)
        except FileNotFoundError as exc:
            raise CheckpointError(f"{self.tier} tier at {self.url}: no {key}") from exc
        except OSError as exc:
            raise self._io(f"reading {key}", exc) from exc

    def _verified(self, info: CheckpointInfo) -> tuple[CheckpointInfo, bytes]:
        return decode(info.key, self.tier, self._read(info.key))

    def load(self, round_num: int) -> bytes:
        """Round ``round_num``'s blob, verified.

        Raises:
            CheckpointError: no such checkpoint, or it cannot be read.
            CheckpointCorrupt: it fails its format, length or SHA-256 check.
        """
        key = checkpoint_key(round_num)
        return decode(key, self.tier, self._read(key))[1]

    def _head(self, key: str) -> CheckpointInfo | None:
        try:
            return parse_header(key, self.tier, self.blobs.read_head(key, HEAD_BYTES))[0]
        except FileNotFoundError:
            return None  # removed by retention since it was listed
        except CheckpointCorrupt as exc:
            _log.warning("%s: skipping %s: %s", self.url, key, exc)
            return None
        except OSError as exc:
            raise self._io(f"reading the header of {key}", exc) from exc

    def list(self) -> list[CheckpointInfo]:
        """Committed checkpoints whose header parses, oldest first (bodies unchecked)."""
        keys = sorted(k for k in self._names() if round_of_key(k) is not None)
        return [info for info in map(self._head, keys) if info is not None]

    def latest(self) -> tuple[CheckpointInfo, bytes] | None:
        """The newest checkpoint that verifies; corrupt ones are skipped with a warning."""
        keys = sorted((k for k in self._names() if round_of_key(k) is not None), reverse=True)
        candidates = [CheckpointInfo(round_of_key(k) or 0, self.tier, k, 0, "", 0.0) for k in keys]
        return newest_good(self.url, candidates, self._verified)

    def close(self) -> None:
        """Nothing is held open between calls; present for the protocol."""
