"""A whole simulation's state, serialized for a checkpoint (Issue 15 part 2).

An :class:`EngineSnapshot` is the rounds completed, the driver that took it, a digest
of the run's configuration and one :class:`~fedstrata.core.statepart.StatePart` per
stateful component (model and server-optimizer state, coordinator, DP allocator and
accountant, downlink encoder, the clients' state files, topology ...).

Format (``to_bytes``), version 1, no pickle anywhere::

    b"FSTRATA-SNAP\\n"            magic (13 bytes)
    uint64 little-endian         length of the header
    header                       UTF-8 JSON: version, rounds_done, driver,
                                 config_digest, wall_s, every part's metadata, and an
                                 index of the arrays (part, name, dtype, shape, offset,
                                 nbytes)
    array bytes                  each array's raw C-order bytes, back to back

It is the raw bytes of the arrays behind a JSON index rather than an ``.npz`` archive:
an archive's CRC and copies cost more than the rest of the snapshot together
(``bench/_resilience_resume.py``), and the checkpoint stores already checksum the whole
blob (SHA-256). Only plain numeric and boolean dtypes are written. ``wall_s`` (the
run's wall time when the snapshot was taken, over every segment of a resumed run) is
optional in the header: a snapshot written before it existed reads as 0.0. A blob of another
version, one that does not parse, or an index that points outside the blob raises
:class:`~fedstrata.errors.CheckpointCorrupt` naming the fault.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.statepart import StatePart
from fedstrata.errors import CheckpointCorrupt, CheckpointError

__all__ = ["SNAPSHOT_VERSION", "EngineSnapshot"]

SNAPSHOT_VERSION = 1
"""Bumped on any change of the layout; older or newer blobs are refused."""

MAGIC = b"FSTRATA-SNAP\n"
_LENGTH = struct.Struct("<Q")
_KINDS = frozenset("biufc")  # bool, signed, unsigned, float, complex


@dataclass(frozen=True)
class EngineSnapshot:
    """The state of a simulation after ``rounds_done`` rounds.

    Attributes:
        rounds_done: rounds completed (the next round to run).
        driver: the driver that took it (``flat``, ``tree``); a resume refuses another.
        config_digest: sha256 of the run's resolved configuration.
        parts: component name -> its state.
        wall_s: the run's wall time up to this snapshot, summed over the segments of a
            resumed run (what a resume adds its own segment to); not compared by
            :meth:`same_as`.

    Raises:
        CheckpointError: ``wall_s`` is negative or not finite.
    """

    rounds_done: int
    driver: str
    config_digest: str
    parts: Mapping[str, StatePart] = field(default_factory=dict)
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        wall_s = self.wall_s
        if not isinstance(wall_s, (int, float)) or not math.isfinite(wall_s) or wall_s < 0:
            raise CheckpointError(
                f"EngineSnapshot.wall_s must be a finite number >= 0, got {self.wall_s!r}"
            )

    def part(self, name: str) -> StatePart:
        """Raises: CheckpointCorrupt: the snapshot has no part ``name``."""
        try:
            return self.parts[name]
        except KeyError:
            raise CheckpointCorrupt(
                f"checkpoint of round {self.rounds_done} has no part {name!r} "
                f"(has {sorted(self.parts)})"
            ) from None

    def to_bytes(self) -> bytes:
        """The versioned blob (see the module docstring).

        Raises:
            CheckpointError: an array of a dtype a snapshot does not hold (objects,
                strings, records).
        """
        index: list[dict[str, Any]] = []
        chunks: list[memoryview] = []
        offset = 0
        for name, p in sorted(self.parts.items()):
            for key in sorted(p.arrays):
                arr = np.asarray(p.arrays[key])
                arr = arr if arr.flags.c_contiguous else arr.copy(order="C")
                _check_dtype(name, key, arr)
                index.append({
                    "part": name, "name": key, "dtype": arr.dtype.str,
                    "shape": list(arr.shape), "offset": offset, "nbytes": arr.nbytes,
                })  # fmt: skip
                chunks.append(arr.reshape(-1).view(np.uint8).data)
                offset += arr.nbytes
        header = {
            "version": SNAPSHOT_VERSION,
            "rounds_done": self.rounds_done,
            "driver": self.driver,
            "config_digest": self.config_digest,
            "wall_s": self.wall_s,
            "parts": {name: dict(p.meta) for name, p in sorted(self.parts.items())},
            "arrays": index,
        }
        text = json.dumps(header, sort_keys=True, allow_nan=True).encode("utf-8")
        return b"".join([MAGIC, _LENGTH.pack(len(text)), text, *chunks])

    @classmethod
    def from_bytes(cls, blob: bytes) -> EngineSnapshot:
        """Inverse of :meth:`to_bytes` (the arrays are copies, writable).

        Raises:
            CheckpointCorrupt: not a snapshot, an unknown version, or an index that
                does not fit the blob.
        """
        header, body = _split(blob)
        arrays: dict[str, dict[str, NDArray[Any]]] = {name: {} for name in header["parts"]}
        for entry in header["arrays"]:
            part, name, arr = _array(entry, body)
            if part not in arrays:
                raise CheckpointCorrupt(f"engine snapshot array {name!r} of unknown part {part!r}")
            arrays[part][name] = arr
        parts = {
            name: StatePart(meta=meta, arrays=arrays[name])
            for name, meta in header["parts"].items()
        }
        try:
            wall_s = header.get("wall_s", 0.0)
            return cls(
                int(header["rounds_done"]), str(header["driver"]), str(header["config_digest"]),
                parts, wall_s,
            )  # fmt: skip
        except (TypeError, ValueError, CheckpointError) as exc:
            raise CheckpointCorrupt(f"engine snapshot header is invalid: {exc}") from None

    def same_as(self, other: EngineSnapshot) -> bool:
        """Equal round, driver, digest and parts (arrays bit for bit)."""
        head = (self.rounds_done, self.driver, self.config_digest)
        if head != (other.rounds_done, other.driver, other.config_digest):
            return False
        if set(self.parts) != set(other.parts):
            return False
        return all(p.same_as(other.parts[k]) for k, p in self.parts.items())


def _check_dtype(part: str, key: str, arr: NDArray[Any]) -> None:
    if arr.dtype.kind not in _KINDS or arr.dtype.fields is not None:
        raise CheckpointError(
            f"snapshot part {part!r} array {key!r} has dtype {arr.dtype}: only numbers "
            "and booleans are checkpointed"
        )


def _split(blob: bytes) -> tuple[dict[str, Any], memoryview]:
    """The parsed header and the array bytes after it."""
    view = memoryview(blob)
    start = len(MAGIC) + _LENGTH.size
    if bytes(view[: len(MAGIC)]) != MAGIC or len(view) < start:
        raise CheckpointCorrupt("not an engine snapshot (no FSTRATA-SNAP magic)")
    (length,) = _LENGTH.unpack(view[len(MAGIC) : start])
    if start + length > len(view):
        raise CheckpointCorrupt(
            f"engine snapshot header of {length} bytes exceeds the blob ({len(view)} bytes)"
        )
    try:
        header = json.loads(bytes(view[start : start + length]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointCorrupt(f"engine snapshot header is not JSON: {exc}") from exc
    _check_header(header)
    return header, view[start + length :]


def _check_header(header: object) -> None:
    if not isinstance(header, dict):
        raise CheckpointCorrupt("engine snapshot header is not a JSON object")
    version = header.get("version")
    if version != SNAPSHOT_VERSION:
        raise CheckpointCorrupt(
            f"engine snapshot format version {version!r} is not supported "
            f"(this fedstrata reads version {SNAPSHOT_VERSION})"
        )
    missing = {"rounds_done", "driver", "config_digest", "parts", "arrays"} - header.keys()
    if missing:
        raise CheckpointCorrupt(f"engine snapshot header lacks {sorted(missing)}")


def _array(entry: Mapping[str, Any], body: memoryview) -> tuple[str, str, NDArray[Any]]:
    """One indexed array, copied out of the blob's body."""
    try:
        part, name = str(entry["part"]), str(entry["name"])
        dtype, shape = np.dtype(entry["dtype"]), tuple(int(n) for n in entry["shape"])
        offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointCorrupt(f"engine snapshot index entry {entry!r} is invalid") from exc
    count = int(np.prod(shape, dtype=np.int64))
    if dtype.kind not in _KINDS or count * dtype.itemsize != nbytes:
        raise CheckpointCorrupt(
            f"engine snapshot array {part}/{name}: {dtype} {shape} != {nbytes} B"
        )
    if offset < 0 or offset + nbytes > len(body):
        raise CheckpointCorrupt(f"engine snapshot array {part}/{name} lies outside the blob")
    if count == 0:
        return part, name, np.zeros(shape, dtype=dtype)
    flat = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    return part, name, flat.reshape(shape).copy()
