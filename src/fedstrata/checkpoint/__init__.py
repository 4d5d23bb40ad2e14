"""Checkpoints in tiers: a memory ring, local disk and object storage (issue 15).

Every store implements :class:`CheckpointStore` and passes one conformance suite.
Writes are atomic (temporary name, then one rename), checksummed (SHA-256) and
versioned (a small header, see :mod:`fedstrata.checkpoint.format`); a corrupt or
partial checkpoint is detected and the next older one is used, with a warning.
:class:`Checkpointer` runs the tiers together (memory on the caller's thread, the
others in one background thread). See docs/resilience.md.
"""

from fedstrata.checkpoint.checkpointer import Checkpointer, Tier, TierTimings
from fedstrata.checkpoint.filestore import Blobs, DiskBlobs, FileStore
from fedstrata.checkpoint.format import FORMAT_VERSION, CheckpointInfo
from fedstrata.checkpoint.objectstore import FsspecBlobs, open_object_store
from fedstrata.checkpoint.settings import (
    DISK_DIR,
    CheckpointSettings,
    checkpointer_from_config,
    open_store,
)
from fedstrata.checkpoint.stats import SaveTracker
from fedstrata.checkpoint.store import DEFAULT_KEEP, CheckpointStore, MemoryStore

__all__ = [
    "DEFAULT_KEEP",
    "DISK_DIR",
    "FORMAT_VERSION",
    "Blobs",
    "CheckpointInfo",
    "CheckpointSettings",
    "CheckpointStore",
    "Checkpointer",
    "DiskBlobs",
    "FileStore",
    "FsspecBlobs",
    "MemoryStore",
    "SaveTracker",
    "Tier",
    "TierTimings",
    "checkpointer_from_config",
    "open_object_store",
    "open_store",
]
