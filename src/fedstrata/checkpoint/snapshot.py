"""A whole simulation's state, serialized for a checkpoint (Issue 15 part 2).

An :class:`EngineSnapshot` is the rounds completed, the driver that took it, a digest
of the run's configuration and one :class:`~fedstrata.core.statepart.StatePart` per
stateful component (model and server-optimizer state, coordinator, DP allocator and
accountant, downlink encoder, the clients' state files, topology ...).

Format (``to_bytes``): an uncompressed ``.npz`` archive read with
``allow_pickle=False``. Each array of part ``p`` is the member ``p/name``; the member
``__header__`` is UTF-8 JSON (a uint8 array) holding the format version, the round,
the driver, the config digest and every part's metadata and array names. A blob of
another version, or one that does not parse, raises
:class:`~fedstrata.errors.CheckpointCorrupt` naming the fault.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.statepart import StatePart
from fedstrata.errors import CheckpointCorrupt

__all__ = ["SNAPSHOT_VERSION", "EngineSnapshot"]

SNAPSHOT_VERSION = 1
"""Bumped on any change of the layout; older or newer blobs are refused."""

_HEADER = "__header__"


@dataclass(frozen=True)
class EngineSnapshot:
    """The state of a simulation after ``rounds_done`` rounds.

    Attributes:
        rounds_done: rounds completed (the next round to run).
        driver: the driver that took it (``flat``, ``tree``); a resume refuses another.
        config_digest: sha256 of the run's resolved configuration.
        parts: component name -> its state.
    """

    rounds_done: int
    driver: str
    config_digest: str
    parts: Mapping[str, StatePart] = field(default_factory=dict)

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
        """The versioned ``.npz`` blob (see the module docstring)."""
        header: dict[str, Any] = {
            "version": SNAPSHOT_VERSION,
            "rounds_done": self.rounds_done,
            "driver": self.driver,
            "config_digest": self.config_digest,
            "parts": {
                name: {"meta": dict(p.meta), "arrays": sorted(p.arrays)}
                for name, p in self.parts.items()
            },
        }
        members: dict[str, NDArray[Any]] = {_HEADER: _json_bytes(header)}
        for name, p in sorted(self.parts.items()):
            _check_name(name)
            for key in sorted(p.arrays):
                members[f"{name}/{key}"] = np.asarray(p.arrays[key])
        buf = io.BytesIO()
        np.savez(buf, **members)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> EngineSnapshot:
        """Inverse of :meth:`to_bytes`.

        Raises:
            CheckpointCorrupt: not a snapshot, an unknown version, or members missing.
        """
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                members = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise CheckpointCorrupt(f"not an engine snapshot: {exc}") from exc
        header = _read_header(members)
        parts = {
            name: StatePart(
                meta=spec["meta"],
                arrays={k: _member(members, f"{name}/{k}") for k in spec["arrays"]},
            )
            for name, spec in header["parts"].items()
        }
        return cls(
            int(header["rounds_done"]), str(header["driver"]), str(header["config_digest"]), parts
        )

    def same_as(self, other: EngineSnapshot) -> bool:
        """Equal round, driver, digest and parts (arrays bit for bit)."""
        head = (self.rounds_done, self.driver, self.config_digest)
        if head != (other.rounds_done, other.driver, other.config_digest):
            return False
        if set(self.parts) != set(other.parts):
            return False
        return all(p.same_as(other.parts[k]) for k, p in self.parts.items())


def _check_name(name: str) -> None:
    if not name or name == _HEADER or name.startswith("/"):
        raise CheckpointCorrupt(f"invalid snapshot part name {name!r}")


def _json_bytes(value: object) -> NDArray[np.uint8]:
    text = json.dumps(value, sort_keys=True, allow_nan=True)
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _member(members: Mapping[str, NDArray[Any]], key: str) -> NDArray[Any]:
    try:
        return members[key]
    except KeyError:
        raise CheckpointCorrupt(f"engine snapshot lacks the member {key!r}") from None


def _read_header(members: Mapping[str, NDArray[Any]]) -> dict[str, Any]:
    raw = _member(members, _HEADER)
    try:
        header = json.loads(raw.astype(np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointCorrupt(f"engine snapshot header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointCorrupt("engine snapshot header is not a JSON object")
    version = header.get("version")
    if version != SNAPSHOT_VERSION:
        raise CheckpointCorrupt(
            f"engine snapshot format version {version!r} is not supported "
            f"(this fedstrata reads version {SNAPSHOT_VERSION})"
        )
    missing = {"rounds_done", "driver", "config_digest", "parts"} - header.keys()
    if missing:
        raise CheckpointCorrupt(f"engine snapshot header lacks {sorted(missing)}")
    return header
