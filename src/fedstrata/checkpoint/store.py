"""The checkpoint-store protocol and the memory tier (a ring of the last N rounds).

Every store implements :class:`CheckpointStore` and passes one conformance suite
(``tests/checkpoint/test_checkpoint_conformance.py``): a saved blob loads back byte for
byte; :meth:`~CheckpointStore.latest` returns the newest checkpoint that verifies and
skips corrupt ones with a warning; retention keeps exactly the newest ``keep``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from fedstrata.checkpoint.format import CheckpointInfo, checkpoint_key
from fedstrata.errors import CheckpointCorrupt, CheckpointError, ConfigError

__all__ = ["DEFAULT_KEEP", "CheckpointStore", "MemoryStore", "check_keep", "newest_good"]

_log = logging.getLogger(__name__)
DEFAULT_KEEP = 3


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints of one tier live.

    ``save`` is atomic (a reader sees the whole checkpoint or none), checksummed and
    versioned, and applies the store's retention. ``load`` raises
    :class:`~fedstrata.errors.CheckpointCorrupt` for a checkpoint that fails its checks
    and :class:`~fedstrata.errors.CheckpointError` for one that is absent or unreadable.
    """

    tier: str

    def save(self, round_num: int, blob: bytes) -> CheckpointInfo: ...

    def load(self, round_num: int) -> bytes: ...

    def latest(self) -> tuple[CheckpointInfo, bytes] | None: ...

    def list(self) -> list[CheckpointInfo]: ...

    def close(self) -> None: ...


def check_keep(keep: int | None) -> int:
    """``keep`` or the default, refused unless it is an int >= 1."""
    if keep is None:
        return DEFAULT_KEEP
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigError(
            f"keep (checkpoints retained per tier) must be an int >= 1, got {keep!r}"
        )
    return keep


def newest_good(
    where: str,
    infos: Sequence[CheckpointInfo],
    load: Callable[[CheckpointInfo], tuple[CheckpointInfo, bytes]],
) -> tuple[CheckpointInfo, bytes] | None:
    """The first of ``infos`` (newest first) that loads and verifies.

    A corrupt or vanished one is skipped with a WARNING naming it and the reason.
    """
    for info in infos:
        try:
            return load(info)
        except CheckpointError as exc:
            _log.warning(
                "%s: checkpoint of round %d (%s tier) is unusable, falling back to an "
                "older one: %s",
                where,
                info.round,
                info.tier,
                exc,
            )
    return None


def _blob_bytes(blob: bytes) -> bytes:
    if isinstance(blob, bytes):
        return blob
    if isinstance(blob, bytearray | memoryview):
        return bytes(blob)
    raise CheckpointError(f"blob must be bytes, got {type(blob).__name__}")


class MemoryStore:
    """The memory tier: the last ``keep`` rounds in this process, checksummed.

    ``memory://NAME`` opens a new, empty ring each time (NAME only labels logs): there
    is no process-wide registry. Blobs are kept by reference (``bytes`` is immutable),
    so a save costs one SHA-256 pass and no copy; a load verifies the SHA-256 again.
    Thread-safe.
    """

    tier = "memory"

    def __init__(self, name: str = "memory", keep: int | None = None) -> None:
        self.url = f"memory://{name}"
        self.keep = check_keep(keep)
        self._entries: dict[int, tuple[CheckpointInfo, bytes]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryStore({self.url!r}, keep={self.keep})"

    def save(self, round_num: int, blob: bytes) -> CheckpointInfo:
        """Keep ``blob`` as round ``round_num``; drop rounds beyond the newest ``keep``."""
        key = checkpoint_key(round_num)
        data = _blob_bytes(blob)
        digest = hashlib.sha256(data).hexdigest()
        info = CheckpointInfo(round_num, self.tier, key, len(data), digest, time.time())
        with self._lock:
            self._entries[round_num] = (info, data)
            for old in sorted(self._entries)[: -self.keep]:
                del self._entries[old]
        return info

    def _verified(self, info: CheckpointInfo) -> tuple[CheckpointInfo, bytes]:
        with self._lock:
            entry = self._entries.get(info.round)
        if entry is None:
            raise CheckpointError(f"{self.url}: no checkpoint of round {info.round}")
        stored, data = entry
        if len(data) != stored.size or hashlib.sha256(data).hexdigest() != stored.sha256:
            raise CheckpointCorrupt(f"{self.url}: checkpoint {stored.key} fails its SHA-256")
        return stored, data

    def load(self, round_num: int) -> bytes:
        """Round ``round_num``'s blob, verified.

        Raises:
            CheckpointError: no checkpoint of that round is held.
            CheckpointCorrupt: the held bytes fail their SHA-256.
        """
        key = checkpoint_key(round_num)
        probe = CheckpointInfo(round_num, self.tier, key, 0, "", 0.0)
        return self._verified(probe)[1]

    def latest(self) -> tuple[CheckpointInfo, bytes] | None:
        """The newest checkpoint that verifies, or None."""
        return newest_good(self.url, self.list()[::-1], self._verified)

    def list(self) -> list[CheckpointInfo]:
        """The held checkpoints, oldest first."""
        with self._lock:
            return [self._entries[r][0] for r in sorted(self._entries)]

    def close(self) -> None:
        """Drop every held checkpoint."""
        with self._lock:
            self._entries.clear()
