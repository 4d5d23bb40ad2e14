"""Zero-copy model broadcast and chunk-wise folding of dense uploads.

Two pieces keep the center's memory near one model while models stream:

* :class:`Broadcast`: the model of a round as a payload header plus a view of the
  parameter array; :meth:`Broadcast.chunks` slices it (one chunk copied at a time), so
  serving any number of downloads holds no copy of the model.
* :class:`DenseFold`: decodes one dense (``DENSE_F32``) upload chunk by chunk straight
  into the running sum, checking the payload header first, every value for NaN/Inf as
  it arrives and the CRC-32 at the end. The upload is never reassembled. A failure
  after the first value touched the sum (truncated stream, bad checksum, NaN) cannot
  be taken back out: the caller voids the round (see ``docs/runtime.md``).
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from fedstrata.aggregation.mean import MeanState, WeightedMean
from fedstrata.algorithms.server import EmptyState, FedAvg
from fedstrata.coordinator.round_logic import dense_bytes
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import HEADER_SIZE, MAGIC, VERSION, CodecId
from fedstrata.errors import ConfigError, PayloadError

__all__ = ["Broadcast", "DenseFold", "apply_in_place", "paced"]

_HEADER = struct.Struct("<4sBBHIQI")  # core.payload's layout: magic, version, codec,
_FIELDS = struct.Struct("<BBHIQ")  # flags, params length, body length, CRC-32


def _header(codec: CodecId, params: bytes, body: memoryview) -> bytes:
    fields = _FIELDS.pack(VERSION, int(codec), 0, len(params), len(body))
    crc = zlib.crc32(body, zlib.crc32(params, zlib.crc32(fields)))
    return MAGIC + fields + struct.pack("<I", crc) + params


class Broadcast:
    """A payload's bytes as a few read-only parts (header, then a view of the body).

    Args:
        parts: the consecutive parts of the serialized payload.
    """

    def __init__(self, parts: Sequence[bytes | memoryview]) -> None:
        self._parts = [memoryview(p).cast("B") for p in parts]
        self.nbytes = sum(len(p) for p in self._parts)

    @classmethod
    def of_model(cls, params: NDArray[np.float32]) -> Broadcast:
        """The ``MODEL_F32`` payload of ``params`` without copying them.

        ``params`` must not change while the broadcast is served.
        """
        body_arr = np.ascontiguousarray(params, dtype="<f4")
        body = body_arr.data.cast("B")
        return cls([_header(CodecId.MODEL_F32, b"", body), body])

    @classmethod
    def of_bytes(cls, data: bytes) -> Broadcast:
        """An already serialized payload (an aggregator tier relays its parent's)."""
        return cls([data])

    def to_bytes(self) -> bytes:
        """One contiguous copy (tests and small models only)."""
        return b"".join(bytes(p) for p in self._parts)

    def chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        """Consecutive chunks of ``chunk_bytes`` (the last may be shorter).

        Raises:
            ConfigError: ``chunk_bytes`` < 1.
        """
        if chunk_bytes < 1:
            raise ConfigError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        pending: list[memoryview] = []
        have = 0
        for part in self._parts:
            start = 0
            while start < len(part):
                take = min(chunk_bytes - have, len(part) - start)
                pending.append(part[start : start + take])
                have, start = have + take, start + take
                if have == chunk_bytes:
                    yield b"".join(pending)
                    pending, have = [], 0
        if pending:
            yield b"".join(pending)


class DenseFold:
    """Folds one dense upload into ``out`` as its chunks arrive.

    Args:
        out: the running sum (float32 or float64), updated in place.
        weight: the update's weight (``out += weight * vector``).
        total_bytes: the transfer's declared size (header included).

    Raises:
        PayloadError: ``total_bytes`` is not the size of a dense update of ``out``.
    """

    def __init__(self, out: NDArray[np.floating], weight: float, total_bytes: int) -> None:
        expected = dense_bytes(out.shape[0])
        if total_bytes != expected:
            raise PayloadError(
                f"dense upload declares {total_bytes} bytes; a dense update is {expected}"
            )
        self.out, self.weight = out, weight
        self._head = bytearray()
        self._carry = b""
        self._pos = 0  # next entry of ``out``
        self._crc = 0
        self._want_crc = 0
        self.touched = False  # some value was added into ``out``

    @property
    def done(self) -> bool:
        return self._pos == self.out.shape[0] and not self._carry

    def add(self, chunk: bytes) -> None:
        """Check and fold one chunk.

        Raises:
            PayloadError: a bad header, NaN/Inf, or more bytes than declared.
        """
        view = memoryview(chunk)
        if len(self._head) < HEADER_SIZE:
            take = HEADER_SIZE - len(self._head)
            self._head += view[:take]
            view = view[take:]
            if len(self._head) == HEADER_SIZE:
                self._check_header()
        if view:
            self._fold(self._carry + bytes(view) if self._carry else view)

    def _check_header(self) -> None:
        magic, version, codec, flags, params_len, body_len, crc = _HEADER.unpack(self._head)
        if magic != MAGIC or version != VERSION or flags != 0:
            raise PayloadError("dense upload: bad magic, version or flags")
        if codec != CodecId.DENSE_F32 or params_len != 0:
            raise PayloadError(f"dense upload: codec {codec} with {params_len} parameter bytes")
        if body_len != 4 * self.out.shape[0]:
            raise PayloadError(f"dense upload: body of {body_len} bytes")
        self._crc, self._want_crc = zlib.crc32(self._head[4:20]), crc

    def _fold(self, data: bytes | memoryview) -> None:
        whole = len(data) - len(data) % 4
        self._carry = bytes(data[whole:])
        count = whole // 4
        if self._pos + count + (1 if self._carry else 0) > self.out.shape[0]:
            raise PayloadError("dense upload overran its declared size")
        if count == 0:
            return
        self._crc = zlib.crc32(data[:whole], self._crc)
        vector = np.frombuffer(data, dtype="<f4", count=count)
        if not np.isfinite(vector).all():
            raise PayloadError("dense payload contains NaN/Inf")
        end = self._pos + count
        # the arithmetic of WeightedMean.accumulate: f64 product, added into the sum
        self.out[self._pos : end] += np.multiply(vector, self.weight, dtype=np.float64)
        self._pos, self.touched = end, True

    def finish(self) -> int:
        """Check completeness and the checksum; returns the payload's size in bytes.

        Raises:
            PayloadError: fewer bytes than declared, or a checksum mismatch.
        """
        if not self.done or len(self._head) < HEADER_SIZE:
            raise PayloadError(
                f"dense upload ended after {self._pos} of {self.out.shape[0]} values"
            )
        if self._crc != self._want_crc:
            raise PayloadError("dense upload checksum mismatch")
        return dense_bytes(int(self.out.shape[0]))


def apply_in_place(params: NDArray[np.float32], state: MeanState, opt: FedAvg) -> FloatVector:
    """FedAvg on a float32 mean state, reusing the sum's buffer for the new model.

    Bit-identical to ``opt.step(params, WeightedMean(sum_dtype="float32").finalize(state))``
    without its two model-sized temporaries; ``state`` is consumed.

    Raises:
        AggregationError: the total weight is 0.
    """
    total = state.total_weight
    if total <= 0 or state.weighted_sum.dtype != np.float32:
        return opt.step(params, WeightedMean(sum_dtype="float32").finalize(state), EmptyState())[0]
    mean = np.divide(state.weighted_sum, total, out=state.weighted_sum)
    if opt.server_lr != 1.0:
        np.multiply(mean, np.float32(opt.server_lr), out=mean)
    return np.add(params, mean, out=mean)


async def paced(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` as an async stream that lets other streams progress between chunks."""
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)
