"""Downlink compression: broadcast the model as a compressed delta from the client's version.

The server keeps a *replica*: the model exactly as clients reconstruct it. Publishing a
new model compresses ``new - replica`` with a :class:`CompressionSpec` and adds the
decoded delta to the replica, so what a delta leaves out is carried into the next one
(error feedback without per-client state, as in DoubleSqueeze, Tang et al., ICML 2019).
Every client that applies the deltas in order holds the replica bit for bit, because
server and client run the same float32 operations on the same decoded values.

:class:`DownlinkEncoder` keeps the payloads of the last ``history`` versions. A client
at version ``v`` receives the deltas ``v+1 .. current``; a client with no model, one
further behind than the history, or one whose deltas would outweigh the model, receives
the full replica (``CodecId.MODEL_F32``). :func:`apply_downlink` is the client half.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedstrata.compress.chain import ChainCodec, encode_vector
from fedstrata.compress.spec import CompressionSpec
from fedstrata.core.context import SERVER, RoundContext, derive_seed
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import CodecId, Payload
from fedstrata.core.statepart import StatePart
from fedstrata.errors import (
    CheckpointCorrupt,
    ConfigError,
    FedstrataError,
    PayloadError,
    ShapeError,
)

__all__ = [
    "DownlinkEncoder",
    "DownlinkHistory",
    "DownlinkMessage",
    "apply_downlink",
    "relay_downlink",
]

_VERSION = struct.Struct("<Q")
_FRAME = struct.Struct("<QQI")
_NO_BASE = (1 << 64) - 1


@dataclass(frozen=True, eq=False)
class DownlinkMessage:
    """What one client receives: deltas from ``base_version``, or the full model.

    Attributes:
        base_version: the version the deltas apply to; ``None`` for a full model.
        version: the version the client holds after applying the message.
        payloads: one ``MODEL_F32`` payload (full model) or chain deltas in order
            (empty when the client is up to date).
    """

    base_version: int | None
    version: int
    payloads: tuple[Payload, ...]

    @property
    def nbytes(self) -> int:
        """Size on the wire, framing included."""
        return _FRAME.size + sum(8 + p.nbytes for p in self.payloads)

    def to_bytes(self) -> bytes:
        base = _NO_BASE if self.base_version is None else self.base_version
        parts = [_FRAME.pack(base, self.version, len(self.payloads))]
        for payload in self.payloads:
            raw = payload.to_bytes()
            parts += [_VERSION.pack(len(raw)), raw]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> DownlinkMessage:
        """Parse a serialised message.

        Raises:
            PayloadError: truncated or inconsistent framing, or a malformed payload.
        """
        if len(data) < _FRAME.size:
            raise PayloadError(f"downlink message truncated: {len(data)} bytes")
        base, version, count = _FRAME.unpack_from(data)
        pos, payloads = _FRAME.size, []
        for _ in range(count):
            if pos + 8 > len(data):
                raise PayloadError("downlink message truncated inside its framing")
            (length,) = _VERSION.unpack_from(data, pos)
            if pos + 8 + length > len(data):
                raise PayloadError("downlink message truncated inside a payload")
            payloads.append(Payload.from_bytes(data[pos + 8 : pos + 8 + length]))
            pos += 8 + length
        if pos != len(data):
            raise PayloadError(f"downlink message has {len(data) - pos} trailing bytes")
        return cls(None if base == _NO_BASE else base, version, tuple(payloads))


class DownlinkHistory:
    """The replica, its version and the last ``history`` delta payloads: the cheapest
    message for a client at any version (the encoder's, and a relay's that received
    them, e.g. an aggregator tier between the server and its clients).

    Raises:
        ConfigError: ``history < 0`` or an empty model.
    """

    def __init__(self, initial: FloatVector, history: int = 8, version: int = 0) -> None:
        if history < 0:
            raise ConfigError(f"DownlinkEncoder.history must be >= 0, got {history}")
        if initial.ndim != 1 or initial.shape[0] < 1 or initial.dtype != np.float32:
            raise ShapeError(f"DownlinkEncoder: initial must be 1-D float32, got {initial.shape}")
        self.version = version
        self._replica = initial.copy()
        self._deltas: deque[Payload] = deque(maxlen=history)

    @property
    def replica(self) -> FloatVector:
        """The model clients hold at :attr:`version` (read-only view)."""
        view = self._replica.view()
        view.flags.writeable = False
        return view

    def state_dict(self) -> StatePart:
        """Version, replica and the kept deltas (as their wire bytes), for a checkpoint."""
        arrays: dict[str, NDArray[Any]] = {"replica": self._replica.copy()}
        for i, payload in enumerate(self._deltas):
            arrays[f"delta{i}"] = np.frombuffer(payload.to_bytes(), dtype=np.uint8)
        meta = {"version": self.version, "deltas": len(self._deltas)}
        return StatePart(meta=meta, arrays=arrays)

    def load_state_dict(self, part: StatePart) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            CheckpointCorrupt: the replica does not fit the model or a delta is unreadable.
        """
        replica = part.array("replica")
        if replica.shape != self._replica.shape or replica.dtype != np.float32:
            raise CheckpointCorrupt(
                f"downlink replica {replica.dtype} {replica.shape} does not fit the model"
            )
        deltas = [part.array(f"delta{i}").tobytes() for i in range(int(part.value("deltas")))]
        try:
            payloads = [Payload.from_bytes(d) for d in deltas]
        except FedstrataError as exc:
            raise CheckpointCorrupt(f"downlink delta unreadable: {exc}") from exc
        self._replica = replica.copy()
        self._deltas.clear()
        self._deltas.extend(payloads)
        self.version = int(part.value("version"))

    def message_for(self, client_version: int | None) -> DownlinkMessage:
        """The cheapest message that brings a client at ``client_version`` up to date."""
        behind = None if client_version is None else self.version - client_version
        if behind == 0:
            return DownlinkMessage(client_version, self.version, ())
        if behind is not None and 0 < behind <= len(self._deltas):
            deltas = tuple(self._deltas)[len(self._deltas) - behind :]
            message = DownlinkMessage(client_version, self.version, deltas)
            if message.nbytes < self.full_nbytes:
                return message
        return self.full_message()

    @property
    def full_nbytes(self) -> int:
        """Wire size of a full-model message."""
        empty = DownlinkMessage(None, self.version, (self._full_payload(b""),))
        return empty.nbytes + 4 * int(self._replica.shape[0])

    def full_message(self) -> DownlinkMessage:
        """The whole replica as float32."""
        payload = self._full_payload(self._replica.astype("<f4", copy=False).tobytes())
        return DownlinkMessage(None, self.version, (payload,))

    def _full_payload(self, body: bytes) -> Payload:
        return Payload(CodecId.MODEL_F32, _VERSION.pack(self.version), body)


class DownlinkEncoder(DownlinkHistory):
    """Server side: the replica, its version, and the last ``history`` delta payloads.

    Args:
        initial: the model at version 0 (copied).
        spec: how deltas are compressed. Its ``error_feedback`` is implied (the replica
            carries the residual), so random-k deltas are never rescaled.
        history: how many past deltas to keep (clients further behind get the model).

    Raises:
        ConfigError: ``history < 0`` or an empty model.
    """

    def __init__(self, initial: FloatVector, spec: CompressionSpec, history: int = 8) -> None:
        super().__init__(initial, history)
        self.spec = replace(spec, error_feedback=True)

    def publish(self, new_params: FloatVector, ctx: RoundContext) -> int:
        """Compress ``new_params - replica`` as the next version; return that version.

        Raises:
            ShapeError: ``new_params`` does not match the model.
            ConfigError: ``new_params`` has NaN/Inf.
        """
        if new_params.shape != self._replica.shape or new_params.dtype != np.float32:
            raise ShapeError(
                f"DownlinkEncoder.publish: expected float32 {self._replica.shape}, "
                f"got {new_params.dtype} {new_params.shape}"
            )
        delta = new_params - self._replica
        if not np.isfinite(delta).all():
            raise ConfigError("DownlinkEncoder.publish: the new model has NaN/Inf entries")
        seed = derive_seed(ctx.root_seed, ctx.round_idx, SERVER, "downlink_randk")
        enc = encode_vector(delta, self.spec, ctx.rng("downlink_quantize"), seed)
        _apply(self._replica, enc.indices, enc.values)
        self._deltas.append(enc.payload)
        self.version += 1
        return self.version


def _apply(params: FloatVector, indices: NDArray[np.int64] | None, values: FloatVector) -> None:
    """Add a decoded delta in float32: the one operation server and clients share."""
    if indices is None:
        params += values
    else:
        params[indices] += values


def apply_downlink(
    message: DownlinkMessage, params: FloatVector | None, version: int | None
) -> tuple[FloatVector, int]:
    """Client half: the model and version after ``message`` (``params`` is not modified).

    Args:
        message: from :meth:`DownlinkEncoder.message_for`.
        params: the model the client holds, or ``None``.
        version: its version, or ``None``.

    Raises:
        PayloadError: the message does not apply to ``version``, or a payload is
            malformed (nothing is applied then).
    """
    if message.base_version is None:
        model = _full_model(message)
        if params is not None and model.shape != params.shape:
            raise PayloadError(
                f"downlink full model has {model.shape[0]} values, want {params.shape[0]}"
            )
        return model, message.version
    if params is None or version != message.base_version:
        raise PayloadError(
            f"downlink deltas apply to version {message.base_version}, client holds {version}"
        )
    if message.version != message.base_version + len(message.payloads):
        raise PayloadError("downlink message: version does not match its number of deltas")
    codec = ChainCodec(CompressionSpec(), params.shape[0])
    decoded = [codec.parse(p) for p in message.payloads]
    out = params.copy()
    for d in decoded:
        _apply(out, d.indices, d.values)
    return out, message.version


def _full_model(message: DownlinkMessage) -> FloatVector:
    if len(message.payloads) != 1 or message.payloads[0].codec != CodecId.MODEL_F32:
        raise PayloadError("downlink full-model message must hold one MODEL_F32 payload")
    payload = message.payloads[0]
    if payload.params != _VERSION.pack(message.version) or len(payload.body) % 4:
        raise PayloadError("downlink full model: version or body length is inconsistent")
    model = np.frombuffer(payload.body, dtype="<f4").astype(np.float32)
    if not np.isfinite(model).all():
        raise PayloadError("downlink full model contains NaN/Inf")
    return model


def relay_downlink(
    relay: DownlinkHistory | None, message: DownlinkMessage, history: int
) -> DownlinkHistory:
    """A relay (an aggregator tier) after receiving ``message`` from its server: the
    full model starts a new history; deltas are applied (the client half,
    :func:`apply_downlink`) and kept, so the relay answers its own clients with the
    messages the server would send them.

    Raises:
        PayloadError: the message does not apply to the relay's version, or is malformed.
    """
    if message.base_version is None:
        model, version = apply_downlink(message, None, None)
        return DownlinkHistory(model, history, version)
    if relay is None:
        raise PayloadError("downlink deltas for a relay that holds no model")
    model, version = apply_downlink(message, relay._replica, relay.version)
    relay._replica, relay.version = model, version
    relay._deltas.extend(message.payloads)
    return relay
