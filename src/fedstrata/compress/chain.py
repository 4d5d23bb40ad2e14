"""The compression chain codec: sparsify -> quantize -> index coding -> zstd, with error feedback.

:class:`ChainCodec` implements :class:`fedstrata.pipeline.Codec`. On the client,
``encode`` adds the client's error-feedback residual (Seide et al., "1-Bit Stochastic
Gradient Descent", Interspeech 2014; Stich et al., NeurIPS 2018; Karimireddy et al.,
ICML 2019), selects coordinates, quantizes them, codes the indices and stores the new
residual (what was not sent) in a :class:`~fedstrata.core.state.ClientStateStore`. On
the server, ``accumulate`` validates the whole payload first and then scatter-adds the
sent values straight into the dense float64 running sum, never densifying one client's
update.

The pure kernels live in :mod:`~fedstrata.compress.sparsify`,
:mod:`~fedstrata.compress.quantize`, :mod:`~fedstrata.compress.indexcode` and
:mod:`~fedstrata.compress.wire`; this module is the thin stateful shell.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import zstandard
from numpy.typing import NDArray

from fedstrata.compress import indexcode, quantize, sparsify, wire
from fedstrata.compress.spec import CompressionSpec
from fedstrata.core.context import SERVER, ClientContext, derive_seed
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import CodecId, Payload
from fedstrata.core.state import ClientStateStore
from fedstrata.errors import ConfigError, InvalidUpdateError, PayloadError, ShapeError

__all__ = ["ChainCodec", "Encoded", "encode_vector"]

logger = logging.getLogger(__name__)

RESIDUAL_KEY = "ef_residual"


@dataclass(frozen=True, eq=False)
class Encoded:
    """A payload and what the receiver will reconstruct from it.

    Attributes:
        payload: the wire payload.
        indices: coordinates sent (``None``: all of them, in order).
        values: the dequantized values the receiver will decode at ``indices``.
    """

    payload: Payload
    indices: NDArray[np.int64] | None
    values: FloatVector


def encode_vector(
    x: FloatVector,
    spec: CompressionSpec,
    rng: np.random.Generator,
    randk_seed: int,
    chunk_log2: int = indexcode.DEFAULT_CHUNK_LOG2,
) -> Encoded:
    """Compress a finite float32 vector with ``spec`` (no error feedback: a pure kernel).

    Args:
        x: the vector (not modified).
        spec: the chain to apply.
        rng: generator for the top-k sample and stochastic rounding.
        randk_seed: cohort-shared seed of the random-k support (ignored otherwise).
        chunk_log2: index chunk size (log2 of coordinates).
    """
    size = x.shape[0]
    k = spec.num_kept(size)
    indices, code = _select(x, spec, k, rng=rng, randk_seed=randk_seed, chunk_log2=chunk_log2)
    values = x if indices is None else x[indices]
    if spec.sparsify == "randk" and not spec.error_feedback and k < size:
        values = values * np.float32(size / k)  # unbiased: E[sent] = x
    body, sent = _quantize(values, spec, rng)
    if code is not None:
        body = code.table + code.varint + code.bitmap + body
    use_zstd = False
    if spec.zstd:  # per payload: a tiny body can grow under zstd, then it goes raw
        packed = zstandard.ZstdCompressor(level=spec.zstd_level).compress(body)
        use_zstd = len(packed) < len(body)
        body = packed if use_zstd else body
    params = wire.ChainParams(
        spec.sparsify, spec.quantize, spec.stochastic, spec.error_feedback, use_zstd,
        size, values.shape[0], spec.block_size, chunk_log2,
        len(code.varint) if code else 0, randk_seed if spec.sparsify == "randk" else 0,
    )  # fmt: skip
    return Encoded(Payload(CodecId.CHAIN, params.to_bytes(), body), indices, sent)


def _select(
    x: FloatVector,
    spec: CompressionSpec,
    k: int,
    *,
    rng: np.random.Generator,
    randk_seed: int,
    chunk_log2: int,
) -> tuple[NDArray[np.int64] | None, indexcode.IndexCode | None]:
    if spec.sparsify == "none":
        return None, None
    if spec.sparsify == "randk":
        return sparsify.randk_support(randk_seed, x.shape[0], k), None
    if spec.sparsify == "topk":
        idx = sparsify.topk_indices(x, k, rng)
    else:
        idx = sparsify.topk_approx_indices(x, k, rng)
    code = indexcode.encode_indices(idx, x.shape[0], chunk_log2)
    return code.order, code


def _quantize(
    values: FloatVector, spec: CompressionSpec, rng: np.random.Generator
) -> tuple[bytes, FloatVector]:
    """Body of the values section and the values the receiver will decode."""
    if spec.quantize == 32:
        return values.astype("<f4", copy=False).tobytes(), values
    scales, codes = quantize.quantize(
        values, spec.quantize, spec.block_size, rng if spec.stochastic else None
    )
    sent = quantize.dequantize(scales, codes, spec.quantize, spec.block_size)
    return scales.astype("<f4").tobytes() + quantize.pack_codes(codes, spec.quantize), sent


_ADD_CHUNK = 1 << 15


def _add_scaled(out: NDArray[np.float64], values: FloatVector, weight: float) -> None:
    """``out += weight * values`` in float64, chunk by chunk (no full-size temporary)."""
    buf = np.empty(min(out.shape[0], _ADD_CHUNK), dtype=np.float64)
    for start in range(0, out.shape[0], _ADD_CHUNK):
        part = values[start : start + _ADD_CHUNK]
        tmp = buf[: part.shape[0]]
        np.multiply(part, weight, out=tmp, dtype=np.float64)
        chunk = out[start : start + _ADD_CHUNK]
        chunk += tmp


class ChainCodec:
    """A configurable compression chain (see module docstring); implements ``Codec``.

    Args:
        spec: what the chain does.
        size: length of the flat update vector.
        state_store: where error-feedback residuals live (one float32 vector per
            client); required when ``spec.error_feedback``. Use a
            :class:`~fedstrata.core.state.DiskStateStore` for large populations.
        state_key: the store key of the residual (distinct codecs on one store need
            distinct keys).

    Raises:
        ConfigError: ``size < 1``, or error feedback without a state store.
    """

    def __init__(
        self,
        spec: CompressionSpec,
        size: int,
        state_store: ClientStateStore | None = None,
        state_key: str = RESIDUAL_KEY,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"ChainCodec size must be an int >= 1, got {size!r}")
        if spec.error_feedback and state_store is None:
            raise ConfigError(
                "ChainCodec: spec.error_feedback=True needs a state_store "
                "(MemoryStateStore for one process, DiskStateStore for a population)"
            )
        self.spec = spec
        self.size = size
        self.state_store = state_store
        self.state_key = state_key

    @property
    def name(self) -> str:
        return f"chain:{self.spec.name}"

    def encode(self, vector: FloatVector, ctx: ClientContext) -> Payload:
        """Compress a client's update, adding and updating its residual if configured.

        Raises:
            ShapeError: ``vector`` is not float32 of length ``size``.
            InvalidUpdateError: ``vector`` (or the stored residual) has NaN/Inf.
        """
        self._check_vector(vector, ctx.client_id)
        work = vector
        if self.spec.error_feedback:
            work = vector + self._residual(ctx.client_id)
        seed = derive_seed(ctx.round.root_seed, ctx.round_idx, SERVER, "randk")
        enc = encode_vector(work, self.spec, ctx.rng("quantize"), seed)
        if self.spec.error_feedback:
            self._store_residual(ctx.client_id, work, enc)
        logger.debug(
            "round %d client %d: %s sent %d of %d values in %d bytes",
            ctx.round_idx, ctx.client_id, self.name, enc.values.shape[0], self.size,
            enc.payload.nbytes,
        )  # fmt: skip
        return enc.payload

    def _check_vector(self, vector: FloatVector, client_id: int) -> None:
        if not isinstance(vector, np.ndarray) or vector.dtype != np.float32:
            raise ShapeError(f"{self.name}: expected a float32 array, got {vector!r:.60}")
        if vector.shape != (self.size,):
            raise ShapeError(f"{self.name}: expected shape ({self.size},), got {vector.shape}")
        if not np.isfinite(vector).all():
            raise InvalidUpdateError(client_id, f"{self.name}: update has NaN/Inf entries")

    def _store(self) -> ClientStateStore:
        if self.state_store is None:
            raise ConfigError(f"{self.name}: error feedback needs a state_store")
        return self.state_store

    def _residual(self, client_id: int) -> FloatVector:
        stored = self._store().get(client_id, self.state_key)
        if stored is None:
            return np.zeros(self.size, dtype=np.float32)
        if stored.shape != (self.size,) or stored.dtype != np.float32:
            raise ShapeError(
                f"{self.name}: stored residual of client {client_id} has shape "
                f"{stored.shape} {stored.dtype}, expected ({self.size},) float32"
            )
        return stored.astype(np.float32, copy=False)

    def _store_residual(self, client_id: int, work: FloatVector, enc: Encoded) -> None:
        """Residual = what the client wanted to send minus what the server will decode."""
        if enc.indices is None:
            work -= enc.values
        else:
            work[enc.indices] -= enc.values
        if not np.isfinite(work).all():
            raise InvalidUpdateError(client_id, f"{self.name}: residual overflowed to Inf")
        self._store().put(client_id, self.state_key, work)

    def decode(self, payload: Payload) -> FloatVector:
        """Dense float32 vector of a payload.

        Raises:
            PayloadError: the payload is malformed or not a chain payload.
        """
        decoded = self.parse(payload)
        if decoded.indices is None:
            return decoded.values
        out = np.zeros(self.size, dtype=np.float32)
        out[decoded.indices] = decoded.values
        return out

    def accumulate(self, payload: Payload, out: NDArray[np.float64], weight: float) -> None:
        """Add ``weight * decode(payload)`` into ``out`` by scatter-add.

        The payload is fully validated first; on error ``out`` is unchanged.

        Raises:
            PayloadError: malformed payload.
            ShapeError: ``out`` is not a float64 vector of length ``size``.
            ConfigError: ``weight`` is not finite.
        """
        if out.dtype != np.float64 or out.shape != (self.size,):
            raise ShapeError(f"{self.name}: out must be float64 ({self.size},), got {out.shape}")
        if not math.isfinite(weight):
            raise ConfigError(f"{self.name}: accumulate weight must be finite, got {weight}")
        decoded = self.parse(payload)
        if decoded.indices is None:
            _add_scaled(out, decoded.values, weight)
        else:
            scaled = decoded.values.astype(np.float64)
            scaled *= weight
            out[decoded.indices] += scaled  # indices are unique: fancy add is exact

    def parse(self, payload: Payload) -> wire.Decoded:
        """Validated indices and values of a payload (no dense vector).

        Raises:
            PayloadError: malformed payload.
        """
        if payload.codec != CodecId.CHAIN:
            raise PayloadError(f"{self.name} got a payload of codec {payload.codec.name}")
        params = wire.parse_params(payload.params, self.size)
        decoded = wire.parse_body(params, payload.body)
        if params.sparsify == "randk":
            support = sparsify.randk_support(params.seed, self.size, params.count)
            return wire.Decoded(support, decoded.values)
        return decoded
