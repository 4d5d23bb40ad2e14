"""Downlink compression over the wire: both halves around :mod:`fedstrata.compress.downlink`.

The simulator's compressed broadcast and the runtime share one encoder,
:class:`~fedstrata.compress.DownlinkEncoder` (DoubleSqueeze-style error feedback in a
server-side replica, Tang et al., ICML 2019); this module only moves its messages.

* :class:`DownlinkServer` (the center): the encoder, started from the run's initial
  model and told of every new model by the server step (it is the step's
  ``broadcast``), and the serialised message for each version a client may hold, built
  once per (round, version) and shared by every client at that version.
* :class:`DownlinkReplica` (a client agent): the model it holds and its version. A
  download asks for the deltas since that version (:class:`DownlinkAsk`); the center
  answers with the deltas, or the full model when the client holds none, is further
  behind than ``downlink.history`` or the deltas would outweigh the model. Applying the
  message runs the encoder's own float32 additions, so every client holds the replica
  bit for bit and trains from exactly the model the simulator's clients train from.

Byte accounting: a download moves ``len(DownlinkMessage.to_bytes())`` payload bytes,
which is the simulator's ``DownlinkMessage.nbytes`` for the same (client, version).

Run identity: a client's version belongs to one run; a task of a new run resets its
replica (its next download is the full model). A new *term* of the same run (a standby
center resumed it) keeps it: the center's checkpoint carries the encoder
(:class:`DownlinkPart`), so the new term answers the versions clients hold with the
messages the previous center would have sent.

An edge's own rounds (``topology.kappa_edge > 1``): the first edge round of a parent's
round relays the parent's message; the later ones send the edge's local model dense,
as the simulator's tree does (:class:`LocalModel`, a full-model message marked
:data:`LOCAL_VERSION`), which a client trains from without touching its replica, so
the next parent message still applies to the version it holds. No I/O here.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from fedstrata.compress import CompressionSpec, DownlinkEncoder
from fedstrata.compress.downlink import (
    DownlinkHistory,
    DownlinkMessage,
    apply_downlink,
    relay_downlink,
)
from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import CodecId, Payload
from fedstrata.core.statepart import StatePart
from fedstrata.errors import CheckpointCorrupt, PayloadError, ProtocolError
from fedstrata.runtime.streaming import Broadcast, paced
from fedstrata.runtime.transport import ChunkPlan, iter_chunks

__all__ = [
    "LOCAL_VERSION",
    "DownlinkAsk",
    "DownlinkPart",
    "DownlinkReplica",
    "DownlinkServer",
    "LocalModel",
    "kind_mismatch",
    "local_downlink",
    "local_model",
    "serve_model",
]

log = logging.getLogger(__name__)

LOCAL_VERSION = (1 << 64) - 2
"""The version of an edge's local model between its edge rounds (not a version of the
parent's model: a client trains from it and keeps its replica)."""
_LOCAL = struct.Struct("<Q").pack(LOCAL_VERSION)


@dataclass(frozen=True)
class DownlinkAsk:
    """A download under downlink compression: the version the client holds (None:
    none, it needs the full model)."""

    version: int | None = None


class DownlinkServer:
    """The center's half; see the module docstring.

    Args:
        spec: how deltas are compressed (``downlink`` of the configuration).
        history: deltas kept (``downlink.history``).
    """

    def __init__(self, spec: CompressionSpec, history: int) -> None:
        self.spec, self.history = spec, history
        self._source: DownlinkHistory | None = None  # the encoder, or a tier's relay
        self._messages: dict[int | None, bytes] = {}
        self._resume: StatePart | None = None  # a checkpointed encoder, for start()

    def start(self, params: FloatVector) -> None:
        """Start a run from ``params`` (version 0), or resume it from :meth:`resume`'s
        encoder state.

        Raises:
            CheckpointCorrupt: the resumed state does not fit the model.
        """
        encoder = DownlinkEncoder(params, self.spec, self.history)
        if self._resume is not None:
            encoder.load_state_dict(self._resume)
            self._resume = None
        self._source = encoder
        self._messages.clear()

    def resume(self, state: StatePart) -> None:
        """The next :meth:`start` resumes the encoder ``state`` (a center's checkpoint)."""
        self._resume = state

    @property
    def encoder(self) -> DownlinkEncoder:
        """The encoder of the run.

        Raises:
            ProtocolError: :meth:`start` was not called (or this is a tier's relay).
        """
        if not isinstance(self._source, DownlinkEncoder):
            raise ProtocolError("downlink: no run started (DownlinkServer.start)")
        return self._source

    def _held(self) -> DownlinkHistory:
        if self._source is None:
            raise ProtocolError("downlink: no model yet (no run started, nothing relayed)")
        return self._source

    @property
    def version(self) -> int:
        """The version clients are brought to now."""
        return self._held().version

    def publish(self, params: FloatVector, ctx: RoundContext) -> None:
        """The server step made ``params``: compress its delta as the next version."""
        version = self.encoder.publish(params, ctx)
        self._messages.clear()
        log.debug("round %d: downlink version %d published", ctx.round_idx, version)

    def reset(self) -> None:
        """Forget the model (a tier whose parent started a new run)."""
        self._source = None
        self._messages.clear()

    def relay_ask(self) -> DownlinkAsk:
        """An aggregator tier: what it asks its parent for (its relay's version)."""
        return DownlinkAsk(None if self._source is None else self._source.version)

    def relay(self, data: bytes, size: int) -> FloatVector:
        """An aggregator tier: apply its parent's message and keep its deltas, so this
        server answers the tier's clients with the messages the parent would send them
        (:func:`~fedstrata.compress.downlink.relay_downlink`); returns the model.

        Raises:
            PayloadError: a malformed message, one that does not apply, or a model of
                the wrong size (the relay is reset: the next one is the full model).
        """
        try:
            message = DownlinkMessage.from_bytes(data)
            source = relay_downlink(self._source, message, self.history)
            if source.replica.shape != (size,):
                raise PayloadError(f"downlink model has {source.replica.shape[0]} values")
        except PayloadError:
            self._source = None
            raise
        self._source = source
        self._messages.clear()
        return np.array(source.replica)

    def message(self, ask: DownlinkAsk) -> bytes:
        """The serialised message that brings a client at ``ask.version`` up to date.

        A version the center never published (ahead of it) gets the full model.
        """
        held = ask.version
        if held is not None and not 0 <= held <= self.version:
            log.warning("downlink: a client claims version %d of %d", held, self.version)
            held = None
        data = self._messages.get(held)
        if data is None:
            data = self._held().message_for(held).to_bytes()
            self._messages[held] = data
        return data


class LocalModel(DownlinkServer):
    """An edge's answer to its clients' downloads in its later edge rounds: its local
    model, dense, as one full-model message of :data:`LOCAL_VERSION` (whatever version
    the client holds). The simulator's edge broadcasts its local model dense too."""

    def __init__(self, relay: DownlinkServer, params: FloatVector) -> None:
        super().__init__(relay.spec, relay.history)
        body = np.asarray(params, dtype="<f4").tobytes()
        payload = Payload(CodecId.MODEL_F32, _LOCAL, body)
        self._data = DownlinkMessage(None, LOCAL_VERSION, (payload,)).to_bytes()

    def message(self, ask: DownlinkAsk) -> bytes:
        return self._data


def local_downlink(
    relay: DownlinkServer | None, params: FloatVector, *, fresh: bool
) -> DownlinkServer | None:
    """What a node serves its receivers in one of its periods: the parent's messages
    (``relay``) when the period starts from the parent's fresh model, else its local
    model ``params`` dense (:class:`LocalModel`); None without downlink compression."""
    if relay is None or fresh:
        return relay
    return LocalModel(relay, params)


def local_model(message: DownlinkMessage, size: int) -> FloatVector | None:
    """The edge's local model in ``message`` (None: a message of the parent's model).

    Raises:
        PayloadError: a local message that is not one full float32 model of ``size``.
    """
    if message.version != LOCAL_VERSION:
        return None
    ok = message.base_version is None and len(message.payloads) == 1
    payload = message.payloads[0] if ok else None
    if payload is None or payload.codec != CodecId.MODEL_F32 or payload.params != _LOCAL:
        raise PayloadError("an edge's local model must be one full-model payload")
    if len(payload.body) != 4 * size:
        raise PayloadError(f"an edge's local model has {len(payload.body)} bytes, want {4 * size}")
    return np.frombuffer(payload.body, dtype="<f4").astype(np.float32)


class DownlinkPart:
    """A :class:`DownlinkServer`'s encoder (replica, version, kept deltas) as a center
    checkpoint part (:class:`~fedstrata.runtime.failover.StatePart`)."""

    name = "downlink"

    def __init__(self, server: DownlinkServer) -> None:
        self.server = server

    def save(self) -> bytes:
        from fedstrata.checkpoint.snapshot import EngineSnapshot  # its StatePart encoding

        part = self.server.encoder.state_dict()
        return EngineSnapshot(0, self.name, "", {self.name: part}).to_bytes()

    def restore(self, blob: bytes) -> None:
        """Raises: CheckpointCorrupt: not a downlink encoder's state."""
        from fedstrata.checkpoint.snapshot import EngineSnapshot

        snap = EngineSnapshot.from_bytes(blob)
        if snap.driver != self.name:
            raise CheckpointCorrupt(f"the center checkpoint's downlink part is {snap.driver!r}")
        self.server.resume(snap.part(self.name))


class DownlinkReplica:
    """A client's model under downlink compression; see the module docstring."""

    def __init__(self) -> None:
        self.params: FloatVector | None = None
        self.version: int | None = None

    def ask(self) -> DownlinkAsk:
        """What the next download asks for."""
        return DownlinkAsk(self.version if self.params is not None else None)

    def reset(self) -> None:
        """Forget the model (a new run: the next download is the full model)."""
        self.params, self.version = None, None

    def apply(self, data: bytes, size: int) -> FloatVector:
        """Apply a downloaded message; returns the model to train from.

        Raises:
            PayloadError: a malformed message, one that does not apply to the version
                held, or a model of the wrong size (the replica is then reset, so the
                next download is the full model).
        """
        try:
            message = DownlinkMessage.from_bytes(data)
            local = local_model(message, size)
            if local is not None:  # an edge's later edge round: the replica stays
                return local
            params, version = apply_downlink(message, self.params, self.version)
            if params.shape != (size,):
                raise PayloadError(f"downlink model has {params.shape[0]} values, want {size}")
        except PayloadError:
            self.reset()
            raise
        self.params, self.version = params, version
        return params


def kind_mismatch(ask: DownlinkAsk | None, downlink: DownlinkServer | None) -> str | None:
    """Why a download of the other kind than the run's is refused (None: it is not)."""
    if (ask is None) == (downlink is None):
        return None
    return "downlink compression is " + ("off" if ask else "on") + " in this run"


def serve_model(
    model: Broadcast, downlink: DownlinkServer | None, ask: DownlinkAsk | None, chunks: ChunkPlan
) -> tuple[int, AsyncIterator[bytes]]:
    """A download's bytes: the downlink message for ``ask``, or the dense broadcast."""
    if downlink is not None and ask is not None:
        data = downlink.message(ask)
        return len(data), paced(iter_chunks(data, chunks.chunk_bytes))
    return model.nbytes, paced(model.chunks(chunks.chunk_bytes))
