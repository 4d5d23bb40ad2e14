"""The uncompressed float32 codec: the baseline every other codec is measured against."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.context import ClientContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import CodecId, Payload
from fedstrata.core.update import nonfinite_problem, shape_problem
from fedstrata.errors import PayloadError

__all__ = ["DenseCodec"]


class DenseCodec:
    """Sends the vector as raw little-endian float32."""

    def __init__(self, size: int) -> None:
        self.size = size

    @property
    def name(self) -> str:
        return "dense"

    def encode(self, vector: FloatVector, ctx: ClientContext) -> Payload:
        return Payload(CodecId.DENSE_F32, b"", vector.astype("<f4", copy=False).tobytes())

    def decode(self, payload: Payload) -> FloatVector:
        if payload.codec != CodecId.DENSE_F32:
            raise PayloadError(f"dense codec got a payload of codec {payload.codec.name}")
        if payload.params:
            raise PayloadError("dense payload must have an empty parameter block")
        if len(payload.body) % 4:
            raise PayloadError(
                f"dense payload has {len(payload.body)} bytes, expected {4 * self.size}"
            )
        # refused in the words of a dense vector's refusal (core.update.validate_vector)
        problem = shape_problem((len(payload.body) // 4,), self.size)
        if problem is not None:
            raise PayloadError(problem)
        vector = np.frombuffer(payload.body, dtype="<f4").astype(np.float32)
        problem = nonfinite_problem(vector)
        if problem is not None:
            raise PayloadError(problem)
        return vector

    def accumulate(self, payload: Payload, out: NDArray[np.float64], weight: float) -> None:
        vector = self.decode(payload)
        out += weight * vector.astype(np.float64)

    def nbytes(self) -> int:
        """Wire size of one dense payload, header included."""
        return Payload(CodecId.DENSE_F32, b"", b"").nbytes + 4 * self.size
