"""The versioned, checksummed wire format of every update and broadcast.

Layout (little-endian)::

    offset size field
    0      4    magic  b"FSTR"
    4      1    format version (currently 1)
    5      1    codec id (see :class:`CodecId`)
    6      2    flags (reserved, must be 0)
    8      4    length of the codec-parameter block in bytes
    12     8    length of the body in bytes
    20     4    CRC-32 of bytes 4..19 of the header, the parameter block and the body
    24     ...  parameter block, then body

Decoding validates every field and raises :class:`~fedstrata.errors.PayloadError`
naming what is wrong; it never returns a partially valid payload.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from fedstrata.errors import PayloadError

__all__ = ["HEADER_SIZE", "CodecId", "Payload"]

MAGIC = b"FSTR"
VERSION = 1
_HEADER = struct.Struct("<4sBBHIQI")
_FIELDS = struct.Struct("<BBHIQ")  # the header between the magic and the checksum
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size
MAX_PARAMS_BYTES = 1 << 20


class CodecId(IntEnum):
    """Registered codec ids. Ids are part of the wire format: never reuse one."""

    DENSE_F32 = 1
    CHAIN = 2  # a compression chain; the parameter block records its stages
    RING_U32 = 3  # secure-aggregation masked integer ring
    MODEL_F32 = 4  # a full model broadcast


def _crc(fields: bytes, params: bytes, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(params, zlib.crc32(fields)))


@dataclass(frozen=True)
class Payload:
    """A codec id, its parameter block, and the body bytes."""

    codec: CodecId
    params: bytes
    body: bytes

    @property
    def nbytes(self) -> int:
        """Size on the wire, header included."""
        return HEADER_SIZE + len(self.params) + len(self.body)

    def to_bytes(self) -> bytes:
        """Serialise header, parameter block and body into one buffer."""
        fields = _FIELDS.pack(VERSION, int(self.codec), 0, len(self.params), len(self.body))
        crc = _crc(fields, self.params, self.body)
        return b"".join((MAGIC, fields, _CRC.pack(crc), self.params, self.body))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Payload:
        """Parse and validate a serialised payload.

        Raises:
            PayloadError: truncated data, wrong magic or version, unknown codec,
                non-zero reserved flags, inconsistent lengths, or a checksum mismatch.
        """
        buf = memoryview(data).cast("B")
        if len(buf) < HEADER_SIZE:
            raise PayloadError(f"payload truncated: {len(buf)} bytes < header {HEADER_SIZE}")
        magic, version, codec, flags, params_len, body_len, crc = _HEADER.unpack_from(buf)
        if magic != MAGIC:
            raise PayloadError(f"payload has bad magic {bytes(magic)!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise PayloadError(f"payload format version {version} unsupported (want {VERSION})")
        try:
            codec_id = CodecId(codec)
        except ValueError:
            raise PayloadError(f"payload names unknown codec id {codec}") from None
        if flags != 0:
            raise PayloadError(f"payload reserved flags must be 0, got {flags:#x}")
        if params_len > MAX_PARAMS_BYTES:
            raise PayloadError(f"payload parameter block too large: {params_len} bytes")
        if HEADER_SIZE + params_len + body_len != len(buf):
            raise PayloadError(
                f"payload length mismatch: header says {params_len}+{body_len} bytes after "
                f"the header, buffer has {len(buf) - HEADER_SIZE}"
            )
        params = bytes(buf[HEADER_SIZE : HEADER_SIZE + params_len])
        body = bytes(buf[HEADER_SIZE + params_len :])
        if _crc(bytes(buf[4:20]), params, body) != crc:
            raise PayloadError("payload checksum mismatch: the bytes were corrupted")
        return cls(codec=codec_id, params=params, body=body)
