"""The checkpoint file format: a small versioned header, then the caller's bytes.

One checkpoint is one file (or one object), so a single rename commits it::

    b"FSTRATA-CKPT"  magic (12 bytes)
    u16              format version (little-endian; today 1)
    u32              header length in bytes
    header           UTF-8 JSON: {"round", "size", "sha256", "created_unix"}
    body             the caller's blob, ``size`` bytes, whose SHA-256 is ``sha256``

A reader trusts a checkpoint only when the magic, the version, the header, the body's
length and its SHA-256 all check, and the header's round is the one its name claims:
a torn, truncated or bit-flipped file raises :class:`~fedstrata.errors.CheckpointCorrupt`
instead of being restored. Names are ``round-<12 digits>.ckpt`` (they sort by round);
writes in progress are ``.tmp-round-<12 digits>.ckpt-<hex>`` and never listed.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass

from fedstrata.errors import CheckpointCorrupt, CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "HEAD_BYTES",
    "MAGIC",
    "CheckpointInfo",
    "checkpoint_key",
    "decode",
    "encode_header",
    "parse_header",
    "round_of_key",
    "round_of_temp_key",
    "temp_key",
]

MAGIC = b"FSTRATA-CKPT"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<HI")
_FIXED = len(MAGIC) + _PREFIX.size
HEAD_BYTES = 4096
"""Bytes read to parse a header without the body (headers are ~150 bytes)."""
_KEY = re.compile(r"^round-(\d{12})\.ckpt$")
_TEMP = re.compile(r"^\.tmp-round-(\d{12})\.ckpt-[0-9a-f]+$")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a store knows about one checkpoint.

    Attributes:
        round: the round the checkpoint was taken after.
        tier: the store's tier (``"memory"``, ``"disk"`` or ``"object"``).
        key: the checkpoint's name in its store (``round-000000000012.ckpt``).
        size: length of the caller's blob in bytes (the header excluded).
        sha256: hex SHA-256 of the blob.
        created_unix: when it was saved (seconds since the epoch).
    """

    round: int
    tier: str
    key: str
    size: int
    sha256: str
    created_unix: float


def checkpoint_key(round_num: int) -> str:
    """The committed name of round ``round_num``'s checkpoint."""
    if isinstance(round_num, bool) or not isinstance(round_num, int) or round_num < 0:
        raise CheckpointError(f"round_num must be an int >= 0, got {round_num!r}")
    if round_num >= 10**12:
        raise CheckpointError(f"round_num must be < 10**12, got {round_num}")
    return f"round-{round_num:012d}.ckpt"


def temp_key(round_num: int, token: str) -> str:
    """The name a write of round ``round_num`` uses until it is committed."""
    return f".tmp-{checkpoint_key(round_num)}-{token}"


def round_of_key(key: str) -> int | None:
    """The round a committed name holds, or None when ``key`` is not one."""
    match = _KEY.match(key)
    return int(match.group(1)) if match else None


def round_of_temp_key(key: str) -> int | None:
    """The round a write-in-progress name holds, or None when ``key`` is not one."""
    match = _TEMP.match(key)
    return int(match.group(1)) if match else None


def encode_header(info: CheckpointInfo) -> bytes:
    """The bytes written before the blob (magic, version, JSON header)."""
    fields = {
        "round": info.round,
        "size": info.size,
        "sha256": info.sha256,
        "created_unix": info.created_unix,
    }
    header = json.dumps(fields, sort_keys=True).encode()
    return MAGIC + _PREFIX.pack(FORMAT_VERSION, len(header)) + header


def _corrupt(key: str, why: str) -> CheckpointCorrupt:
    return CheckpointCorrupt(f"checkpoint {key} is corrupt: {why}")


def _header_fields(key: str, raw: bytes) -> dict[str, object]:
    try:
        fields = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise _corrupt(key, f"unreadable header ({exc})") from exc
    if not isinstance(fields, dict):
        raise _corrupt(key, "header is not a JSON object")
    return fields


def _info_from(key: str, tier: str, fields: dict[str, object]) -> CheckpointInfo:
    round_num, size = fields.get("round"), fields.get("size")
    digest, created = fields.get("sha256"), fields.get("created_unix")
    if not (isinstance(round_num, int) and isinstance(size, int) and size >= 0):
        raise _corrupt(key, f"header round/size invalid: {round_num!r}/{size!r}")
    if not (isinstance(digest, str) and len(digest) == 64):
        raise _corrupt(key, f"header sha256 invalid: {digest!r}")
    if not isinstance(created, int | float):
        raise _corrupt(key, f"header created_unix invalid: {created!r}")
    if round_of_key(key) not in (None, round_num):
        raise _corrupt(key, f"header says round {round_num}, the name another")
    return CheckpointInfo(round_num, tier, key, size, digest, float(created))


def parse_header(key: str, tier: str, data: bytes) -> tuple[CheckpointInfo, int]:
    """The header at the start of ``data`` and the offset where the body starts.

    Raises:
        CheckpointCorrupt: bad magic, unknown version, short or unreadable header.
    """
    if len(data) < _FIXED or not data.startswith(MAGIC):
        raise _corrupt(key, "missing header (bad magic or too short)")
    version, header_len = _PREFIX.unpack_from(data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise _corrupt(key, f"format version {version}, this build reads {FORMAT_VERSION}")
    if len(data) < _FIXED + header_len:
        raise _corrupt(key, "header truncated")
    fields = _header_fields(key, data[_FIXED : _FIXED + header_len])
    return _info_from(key, tier, fields), _FIXED + header_len


def decode(key: str, tier: str, data: bytes) -> tuple[CheckpointInfo, bytes]:
    """Check a whole checkpoint file and return its info and the caller's blob.

    Raises:
        CheckpointCorrupt: any check fails (header, length, SHA-256, round).
    """
    info, offset = parse_header(key, tier, data)
    body = memoryview(data)[offset:]
    if len(body) != info.size:
        raise _corrupt(key, f"body is {len(body)} bytes, header says {info.size}")
    if hashlib.sha256(body).hexdigest() != info.sha256:
        raise _corrupt(key, "SHA-256 mismatch")
    return info, bytes(body)
