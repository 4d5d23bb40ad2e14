"""gRPC service and client link of the runtime (``proto/fedstrata.proto``).

The service is registered through generic handlers over the generated message
classes, so no untyped stub code is involved. :class:`CenterServer` (an async context
manager that owns the gRPC server) authenticates every call before it reaches the
:class:`~fedstrata.runtime.center.Center`; :class:`GrpcLink` (an async context manager
that owns the channel) is the client's side. gRPC exceptions never leave this module
unmapped: callers see :class:`~fedstrata.errors.ProtocolError` (rejected by the
center), :class:`~fedstrata.errors.DeadlineError` or
:class:`~fedstrata.errors.TransportError`.

Liveness: a client holds one ``Session`` stream for its life; HTTP/2 keepalive pings
(``keepalive_s``) are its heartbeat, so a dead or partitioned client ends its session
and is failed in the open round without timers in the round logic.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from fedstrata.core.clock import Clock
from fedstrata.core.payload import Payload
from fedstrata.core.training import LocalPlan, OptimizerKind
from fedstrata.errors import (
    DeadlineError,
    FedstrataError,
    PayloadError,
    ProtocolError,
    TransportError,
)
from fedstrata.runtime.center import Center, TaskKind, TaskSpec, UploadHeader
from fedstrata.runtime.guard import (
    CONTROL_LIMIT_BYTES,
    Admission,
    CallGuard,
    Refused,
    ServerLimits,
    server_options,
)
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.security import (
    TlsFiles,
    TokenTable,
    channel_credentials,
    server_credentials,
)
from fedstrata.runtime.transport import ChunkPlan, Reassembler, iter_chunks

__all__ = ["CenterServer", "GrpcLink", "WireCounter"]

log = logging.getLogger(__name__)
SERVICE = "fedstrata.runtime.v1.Center"


def _options(chunks: ChunkPlan, keepalive_s: float) -> list[tuple[str, int]]:
    limit = chunks.message_limit_bytes
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(keepalive_s * 500)),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def _plan_pb(plan: LocalPlan | None) -> pb.Plan | None:
    if plan is None:
        return None
    return pb.Plan(
        batch_size=plan.batch_size,
        lr=plan.lr,
        epochs=plan.epochs or 0,
        steps=plan.steps or 0,
        optimizer=plan.optimizer.value,
        momentum=plan.momentum,
        weight_decay=plan.weight_decay,
        prox_mu=plan.prox_mu,
    )


def _plan(msg: pb.Plan) -> LocalPlan:
    return LocalPlan(
        batch_size=msg.batch_size,
        lr=msg.lr,
        epochs=msg.epochs or None,
        steps=msg.steps or None,
        optimizer=OptimizerKind(msg.optimizer),
        momentum=msg.momentum,
        weight_decay=msg.weight_decay,
        prox_mu=msg.prox_mu,
    )


def _task_pb(task: TaskSpec) -> pb.Task:
    kind = pb.Task.TRAIN if task.kind is TaskKind.TRAIN else pb.Task.DONE
    return pb.Task(
        kind=kind,
        round_idx=task.round_idx,
        root_seed=task.root_seed,
        deadline_s=task.deadline_s or 0.0,
        plan=_plan_pb(task.plan),
        model_bytes=task.model_bytes,
    )


def _task(msg: pb.Task) -> TaskSpec:
    if msg.kind == pb.Task.DONE:
        return TaskSpec(TaskKind.DONE)
    if msg.kind != pb.Task.TRAIN:
        raise ProtocolError(f"center sent a task of unknown kind {msg.kind}")
    return TaskSpec(
        TaskKind.TRAIN,
        msg.round_idx,
        msg.root_seed,
        _plan(msg.plan),
        msg.deadline_s or None,
        msg.model_bytes,
    )


class _Service:
    """The three RPCs; each call is authenticated from its metadata before any read.

    Every method is served as a request stream read with ``context.read()`` under the
    idle timeout, so not even a unary request is read before the call is authenticated
    and admitted (:class:`~fedstrata.runtime.guard.CallGuard`).
    """

    def __init__(
        self,
        center: Center,
        tokens: TokenTable,
        mutual: bool,
        limits: ServerLimits,
        clock: Clock | None = None,
    ) -> None:
        self.center = center
        self.counter = WireCounter()
        self.chunk_limit = center.settings.chunks.message_limit_bytes
        self.guard = CallGuard(
            tokens, limits, mutual=mutual, chunk_limit=self.chunk_limit, clock=clock
        )
        self.guard.on_read = self.counter.count_received

    async def session(self, _requests: object, context: Any) -> None:
        async with self.guard.guarded(context, "Session") as cid:
            hello = await self.guard.first(context, pb.Hello, "Session", CONTROL_LIMIT_BYTES)
            self.guard.check_claim(cid, hello.client_id)
            try:
                async for task in self.center.session(cid):
                    await context.write(_task_pb(task))
            except ProtocolError as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    async def download(self, _requests: object, context: Any) -> None:
        async with self.guard.guarded(context, "Download") as cid:
            request = await self.guard.first(
                context, pb.DownloadRequest, "Download", CONTROL_LIMIT_BYTES
            )
            self.guard.check_claim(cid, request.client_id)
            try:
                total, chunks = self.center.download(cid, request.round_idx)
            except ProtocolError as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            header = pb.StreamHeader(client_id=cid, round_idx=request.round_idx, total_bytes=total)
            await context.write(pb.StreamPart(header=header))
            async for chunk in chunks:
                await context.write(pb.StreamPart(data=chunk))

    async def submit(self, _requests: object, context: Any) -> pb.SubmitReply:
        async with self.guard.guarded(context, "Submit") as cid:
            first = await self.guard.first(context, pb.StreamPart, "Submit", self.chunk_limit)
            if first.WhichOneof("part") != "header":
                why = "Submit: the first message is not a header"
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed", why)
            h = first.header
            self.guard.check_claim(cid, h.client_id)
            partial = h.content == pb.StreamHeader.PARTIAL
            header = UploadHeader(
                cid, h.round_idx, h.total_bytes, h.num_examples, dict(h.metrics), partial
            )
            accepted, reason = await self.center.submit(header, self._data_parts(context))
            return pb.SubmitReply(accepted=accepted, reason=reason)
        raise AssertionError("unreachable")  # a refusal aborts the call

    async def _data_parts(self, context: Any) -> AsyncIterator[bytes]:
        """The chunks after a submission's header (refusals end the upload with a reason)."""
        while (data := await self.guard.next(context)) is not None:
            part = self.guard.parse(data, pb.StreamPart, "Submit chunk", self.chunk_limit)
            if part.WhichOneof("part") != "data":
                raise PayloadError("a submission carries a second header")
            yield part.data

    def handler(self) -> grpc.GenericRpcHandler:
        w = self.counter.writer
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                # request streams on the server whatever the client's cardinality: the
                # handlers read (after authenticating) with context.read()
                "Session": grpc.stream_stream_rpc_method_handler(
                    self.session, response_serializer=w(pb.Task)
                ),
                "Download": grpc.stream_stream_rpc_method_handler(
                    self.download, response_serializer=w(pb.StreamPart)
                ),
                "Submit": grpc.stream_unary_rpc_method_handler(
                    self.submit, response_serializer=w(pb.SubmitReply)
                ),
            },
        )


GRPC_PREFIX_BYTES = 5  # each gRPC message: 1-byte flag + 4-byte length, then the message


class WireCounter:
    """gRPC message bytes a server received and sent (messages plus their 5-byte prefix).

    HTTP/2 frame headers, TLS records and TCP/IP headers are below this count.
    """

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0

    @property
    def total(self) -> int:
        return self.received + self.sent

    def count_received(self, message_bytes: int) -> None:
        """Count one received message of ``message_bytes`` (plus its prefix)."""
        self.received += message_bytes + GRPC_PREFIX_BYTES

    def reader(self, cls: Any) -> Any:
        def read(data: bytes) -> Any:
            self.received += len(data) + GRPC_PREFIX_BYTES
            return cls.FromString(data)

        return read

    def writer(self, cls: Any) -> Any:
        def write(msg: Any) -> bytes:
            data: bytes = cls.SerializeToString(msg)
            self.sent += len(data) + GRPC_PREFIX_BYTES
            return data

        return write


class CenterServer:
    """Serves a :class:`Center` over gRPC; owns the server from enter to exit.

    Every call is authenticated from its metadata before a message is read, admitted
    under the caps of ``limits`` and timed out by them; each refusal is logged with
    its reason and counted in :attr:`refusals` (see :mod:`fedstrata.runtime.guard`).

    Args:
        center: the round driver.
        tokens: bearer tokens of the clients.
        address: ``host:port`` to bind (port 0: any free port, see :attr:`port`).
        tls: the server's PEM files (None: plaintext, loopback tests only).
        mutual: require client certificates whose common name matches the token.
        keepalive_s: HTTP/2 ping interval (the sessions' heartbeat).
        limits: caps and deadlines (default :class:`ServerLimits`).
        clock: time of the refusal log's windows.
    """

    def __init__(
        self,
        center: Center,
        tokens: TokenTable,
        *,
        address: str = "127.0.0.1:0",
        tls: TlsFiles | None = None,
        mutual: bool = False,
        keepalive_s: float = 10.0,
        limits: ServerLimits | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.center, self.address, self.tls, self.mutual = center, address, tls, mutual
        self.limits = limits or ServerLimits()
        self._service = _Service(center, tokens, mutual and tls is not None, self.limits, clock)
        chunks = center.settings.chunks
        options = server_options(_options(chunks, keepalive_s), chunks, self.limits)
        self._server = aio.server(options=options)
        self._server.add_generic_rpc_handlers((self._service.handler(),))
        self.port = 0

    @property
    def admission(self) -> Admission:
        """The calls this server holds now (and the most it held at once)."""
        return self._service.guard.admission

    @property
    def refusals(self) -> Counter[str]:
        """Refused calls so far, by kind (``unauthenticated``, ``idle``, ...)."""
        return self._service.guard.refusals.counts

    @property
    def counter(self) -> WireCounter:
        """gRPC message bytes this server has received and sent so far."""
        return self._service.counter

    async def __aenter__(self) -> CenterServer:
        try:
            if self.tls is None:
                self.port = self._server.add_insecure_port(self.address)
            else:
                creds = server_credentials(self.tls, require_client_cert=self.mutual)
                self.port = self._server.add_secure_port(self.address, creds)
        except RuntimeError as exc:
            raise TransportError(f"cannot bind {self.address}: {exc}") from exc
        await self._server.start()
        log.info("center listening on port %d (tls=%s)", self.port, self.tls is not None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._server.stop(grace=1.0)
        self._service.guard.refusals.flush()

    @property
    def target(self) -> str:
        """``host:port`` clients dial (the bound port substituted)."""
        host = self.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"


def _mapped(exc: aio.AioRpcError) -> FedstrataError:
    code, detail = exc.code(), exc.details() or ""
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return ProtocolError(f"center refused the call ({code.name}): {detail}")
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
        return ProtocolError(f"center rejected the call ({code.name}): {detail}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineError(f"call to the center timed out: {detail}")
    return TransportError(f"call to the center failed ({code.name}): {detail}")


class GrpcLink:
    """A client's connection to the center; owns its channel from enter to exit.

    Args:
        target: ``host:port`` of the center.
        client_id: this client.
        token: its bearer token.
        tls: CA (and, for mutual TLS, this client's certificate and key); None: plaintext.
        chunks: chunk size for uploads and the largest accepted download.
        server_name: name to verify in the server certificate (default: from ``target``).
    """

    def __init__(
        self,
        target: str,
        client_id: int,
        token: str,
        *,
        tls: TlsFiles | None = None,
        chunks: ChunkPlan | None = None,
        server_name: str | None = None,
        keepalive_s: float = 10.0,
    ) -> None:
        self.target, self.client_id, self.tls = target, client_id, tls
        self.chunks = chunks or ChunkPlan()
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._options: list[tuple[str, Any]] = list(_options(self.chunks, keepalive_s))
        if server_name is not None:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._channel: aio.Channel | None = None

    async def __aenter__(self) -> GrpcLink:
        self._open()
        return self

    def _open(self) -> None:
        if self.tls is None:
            self._channel = aio.insecure_channel(self.target, options=self._options)
        else:
            creds = channel_credentials(self.tls)
            self._channel = aio.secure_channel(self.target, creds, options=self._options)

    async def close(self) -> None:
        """Close the channel: calls in flight fail, later calls raise ``TransportError``."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def reconnect(self) -> None:
        """Close the channel (if open) and open a new one (the backoff is the caller's)."""
        await self.close()
        self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _call(self, method: str, kind: str, request_cls: Any, reply_cls: Any) -> Any:
        if self._channel is None:
            raise TransportError("GrpcLink is closed (or used outside its 'async with' block)")
        factory = getattr(self._channel, kind)
        return factory(
            f"/{SERVICE}/{method}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=reply_cls.FromString,
        )

    async def session(self) -> AsyncIterator[TaskSpec]:
        """The tasks the center sends this client, until ``DONE``.

        Raises:
            ProtocolError: the center refused the session.
            TransportError: the connection failed.
        """
        call = self._call("Session", "unary_stream", pb.Hello, pb.Task)
        try:
            hello = pb.Hello(client_id=self.client_id)
            # wait_for_ready: a client started before its center waits for it to listen
            async for msg in call(hello, metadata=self._metadata, wait_for_ready=True):
                yield _task(msg)
        except aio.AioRpcError as exc:
            raise _mapped(exc) from exc

    async def download(self, round_idx: int) -> Payload:
        """The model of ``round_idx``, reassembled from its chunks.

        Raises:
            ProtocolError: refused (not selected, stale round).
            PayloadError: a malformed or truncated transfer.
            TransportError: the connection failed.
        """
        call = self._call("Download", "unary_stream", pb.DownloadRequest, pb.StreamPart)
        request = pb.DownloadRequest(client_id=self.client_id, round_idx=round_idx)
        reassembler: Reassembler | None = None
        try:
            async for part in call(request, metadata=self._metadata):
                if part.WhichOneof("part") == "header":
                    limit = self.chunks.max_total_bytes
                    reassembler = Reassembler(part.header.total_bytes, limit)
                elif reassembler is None:
                    raise PayloadError("model stream started without a header")
                else:
                    reassembler.add(part.data)
        except aio.AioRpcError as exc:
            raise _mapped(exc) from exc
        if reassembler is None:
            raise PayloadError("model stream was empty")
        return reassembler.payload()

    async def submit(
        self, round_idx: int, payload: Payload, num_examples: int, metrics: Mapping[str, float]
    ) -> tuple[bool, str]:
        """Stream one update in chunks; returns (accepted, reason).

        Raises:
            ProtocolError: the call was refused (authentication).
            TransportError: the connection failed.
        """
        header = pb.StreamHeader(
            client_id=self.client_id,
            round_idx=round_idx,
            num_examples=num_examples,
            metrics=dict(metrics),
        )
        return await self._stream_up(header, payload.to_bytes())

    async def submit_partial(self, round_idx: int, data: bytes) -> tuple[bool, str]:
        """Stream an aggregator's partial (:func:`~fedstrata.runtime.center.encode_partial`).

        Raises:
            ProtocolError: the call was refused (authentication).
            TransportError: the connection failed.
        """
        header = pb.StreamHeader(
            client_id=self.client_id, round_idx=round_idx, content=pb.StreamHeader.PARTIAL
        )
        return await self._stream_up(header, data)

    async def _stream_up(self, header: pb.StreamHeader, data: bytes) -> tuple[bool, str]:
        call = self._call("Submit", "stream_unary", pb.StreamPart, pb.SubmitReply)
        header.total_bytes = len(data)

        async def parts() -> AsyncIterator[pb.StreamPart]:
            yield pb.StreamPart(header=header)
            for chunk in iter_chunks(data, self.chunks.chunk_bytes):
                yield pb.StreamPart(data=chunk)

        try:
            reply: pb.SubmitReply = await call(parts(), metadata=self._metadata)
        except aio.AioRpcError as exc:
            raise _mapped(exc) from exc
        return reply.accepted, reply.reason
