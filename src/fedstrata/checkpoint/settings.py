"""Open stores by URL and build a :class:`Checkpointer` from the checkpoint settings.

The settings are read through the :class:`CheckpointSettings` protocol, which
``fedstrata.config.CheckpointConfig`` satisfies; this package does not import the config
layer (it sits above the simulator and the runtime, which both use checkpoints).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from fedstrata.checkpoint.checkpointer import Checkpointer, Tier
from fedstrata.checkpoint.filestore import DiskBlobs, FileStore
from fedstrata.checkpoint.objectstore import open_object_store
from fedstrata.checkpoint.store import CheckpointStore, MemoryStore
from fedstrata.errors import CheckpointError

__all__ = ["DISK_DIR", "CheckpointSettings", "checkpointer_from_config", "open_store"]

DISK_DIR = "checkpoints"
"""The disk tier's directory inside a run directory."""


def open_store(
    url: str, *, keep: int | None = None, storage_options: Mapping[str, Any] | None = None
) -> CheckpointStore:
    """The store a URL names.

    ``memory://NAME`` is a new in-process ring (NAME labels logs only); a local path or
    ``file://PATH`` is the disk tier; anything else (``s3://bucket/prefix``) is the
    object tier through fsspec, opened with ``storage_options`` (for S3:
    ``endpoint_url``, ``key``, ``secret``; never logged).

    Raises:
        ConfigError: ``keep`` is not an int >= 1.
        MissingDependencyError: the object tier's fsspec backend is not installed.
        CheckpointError: the URL is empty or cannot be opened.
    """
    if not isinstance(url, str) or not url.strip():
        raise CheckpointError(f"checkpoint store URL must be a non-empty string, got {url!r}")
    if url.startswith("memory://"):
        return MemoryStore(url.removeprefix("memory://") or "memory", keep)
    local = _local_path(url)
    if local is not None:
        return FileStore("disk", DiskBlobs(local), keep)
    return open_object_store(url, keep, storage_options)


def _local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    return None if "://" in url else Path(url)


class CheckpointSettings(Protocol):
    """What :func:`checkpointer_from_config` reads (``fedstrata.config.CheckpointConfig``).

    A tier whose ``*_every`` is 0 is off; the object tier is off without ``object_url``.
    """

    @property
    def enabled(self) -> bool: ...
    @property
    def memory_every(self) -> int: ...
    @property
    def memory_keep(self) -> int: ...
    @property
    def disk_every(self) -> int: ...
    @property
    def disk_keep(self) -> int: ...
    @property
    def object_url(self) -> str | None: ...
    @property
    def object_every(self) -> int: ...
    @property
    def object_keep(self) -> int: ...

    def storage_options(self) -> dict[str, Any]:
        """fsspec options of the object tier (secrets included; never log them)."""
        ...


def checkpointer_from_config(cfg: CheckpointSettings, run_dir: Path) -> Checkpointer:
    """The tiers ``cfg`` turns on: memory, disk under ``run_dir/checkpoints``, object.

    With ``cfg.enabled`` false the checkpointer has no tiers (snapshots do nothing).

    Raises:
        ConfigError, MissingDependencyError, CheckpointError: as :func:`open_store`.
    """
    tiers: list[Tier] = []
    if not cfg.enabled:
        return Checkpointer(tiers)
    if cfg.memory_every > 0:
        store = open_store(f"memory://{Path(run_dir).name}", keep=cfg.memory_keep)
        tiers.append(Tier(store, cfg.memory_every))
    if cfg.disk_every > 0:
        disk = open_store(str(Path(run_dir) / DISK_DIR), keep=cfg.disk_keep)
        tiers.append(Tier(disk, cfg.disk_every))
    if cfg.object_url is not None and cfg.object_every > 0:
        tiers.append(Tier(_object_tier(cfg, cfg.object_url), cfg.object_every))
    return Checkpointer(tiers)


def _object_tier(cfg: CheckpointSettings, url: str) -> CheckpointStore:
    """The object tier; a local path (a shared mount) is accepted and named "object"."""
    local = _local_path(url)
    if local is not None:
        return FileStore("object", DiskBlobs(local), cfg.object_keep)
    return open_object_store(url, cfg.object_keep, cfg.storage_options())
