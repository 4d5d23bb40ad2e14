"""Chunked streaming of payload bytes, independent of gRPC.

Models and updates can exceed gRPC's message limit (4 MiB by default), so every
transfer is a header followed by chunks of ``chunk_bytes`` (1-4 MiB in deployment;
tests use a few KiB). The sender slices one immutable buffer, so sending never holds
more than the buffer plus one chunk; the receiver writes chunks into one buffer
pre-allocated from the declared total, which it checks against a limit *before*
allocating, so a lying peer cannot make it allocate more than the limit.

These pieces are the transport seam's pure half: the gRPC service and the in-memory
tests both use them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fedstrata.core.payload import Payload
from fedstrata.errors import ConfigError, PayloadError

__all__ = ["DEFAULT_CHUNK_BYTES", "MAX_CHUNK_BYTES", "ChunkPlan", "Reassembler", "iter_chunks"]

DEFAULT_CHUNK_BYTES = 2 << 20
MAX_CHUNK_BYTES = 4 << 20


@dataclass(frozen=True)
class ChunkPlan:
    """How transfers are cut.

    Attributes:
        chunk_bytes: bytes per chunk, in [1, 4 MiB] (deployments: 1-4 MiB).
        max_total_bytes: largest transfer a receiver accepts.
    """

    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_total_bytes: int = 1 << 32

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_bytes <= MAX_CHUNK_BYTES:
            raise ConfigError(
                f"ChunkPlan.chunk_bytes must be in [1, {MAX_CHUNK_BYTES}], got {self.chunk_bytes}"
            )
        if self.max_total_bytes < 1:
            raise ConfigError(
                f"ChunkPlan.max_total_bytes must be >= 1, got {self.max_total_bytes}"
            )

    @property
    def message_limit_bytes(self) -> int:
        """gRPC message size that fits one chunk plus the framing."""
        return self.chunk_bytes + (64 << 10)


def iter_chunks(data: bytes, chunk_bytes: int) -> Iterator[bytes]:
    """Consecutive slices of ``data`` of at most ``chunk_bytes`` (none for empty data).

    Raises:
        ConfigError: ``chunk_bytes`` < 1.
    """
    if chunk_bytes < 1:
        raise ConfigError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    view = memoryview(data)
    for start in range(0, len(view), chunk_bytes):
        yield bytes(view[start : start + chunk_bytes])


class Reassembler:
    """Collects the chunks of one transfer into a buffer sized by the declared total.

    Args:
        total_bytes: what the header declared.
        limit_bytes: the most this receiver accepts.

    Raises:
        PayloadError: the declared total is negative or over ``limit_bytes``.
    """

    def __init__(self, total_bytes: int, limit_bytes: int) -> None:
        if not 0 < total_bytes <= limit_bytes:
            raise PayloadError(
                f"transfer declares {total_bytes} bytes; must be in [1, {limit_bytes}]"
            )
        self._buf = bytearray(total_bytes)
        self._filled = 0

    @property
    def received_bytes(self) -> int:
        return self._filled

    def add(self, chunk: bytes) -> None:
        """Append one chunk.

        Raises:
            PayloadError: the chunk overruns the declared total.
        """
        end = self._filled + len(chunk)
        if end > len(self._buf):
            raise PayloadError(
                f"transfer overran its declared {len(self._buf)} bytes (got {end} so far)"
            )
        self._buf[self._filled : end] = chunk
        self._filled = end

    def data(self) -> bytes:
        """The completed transfer's bytes.

        Raises:
            PayloadError: fewer bytes than declared.
        """
        if self._filled != len(self._buf):
            raise PayloadError(
                f"transfer ended after {self._filled} of {len(self._buf)} declared bytes"
            )
        return bytes(self._buf)

    def payload(self) -> Payload:
        """The completed transfer as a validated payload.

        Raises:
            PayloadError: fewer bytes than declared, or a malformed payload.
        """
        if self._filled != len(self._buf):
            raise PayloadError(
                f"transfer ended after {self._filled} of {len(self._buf)} declared bytes"
            )
        return Payload.from_bytes(self._buf)
