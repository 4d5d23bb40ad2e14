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

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, NoReturn

import grpc
from grpc import aio

from fedstrata.core.payload import Payload
from fedstrata.core.training import LocalPlan, OptimizerKind
from fedstrata.errors import (
    ConfigError,
    DeadlineError,
    FedstrataError,
    PayloadError,
    ProtocolError,
    TransportError,
)
from fedstrata.runtime.center import Center, TaskKind, TaskSpec, UploadHeader
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.security import (
    TlsFiles,
    TokenTable,
    channel_credentials,
    client_common_name,
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
        run_id=task.run_id,
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
        msg.run_id,
    )


def _upload_header(h: pb.StreamHeader, cid: int) -> UploadHeader:
    partial = h.content == pb.StreamHeader.PARTIAL
    return UploadHeader(
        cid,
        h.round_idx,
        h.total_bytes,
        h.num_examples,
        dict(h.metrics),
        partial,
        h.run_id,
        h.live_clients,
    )


class _Service:
    """The three RPCs, each authenticated before it reaches the center."""

    def __init__(self, center: Center, tokens: TokenTable, mutual: bool) -> None:
        self.center, self.tokens, self.mutual = center, tokens, mutual
        self.counter = WireCounter()

    async def _deny(self, context: Any, code: grpc.StatusCode, claimed: int, why: str) -> NoReturn:
        log.warning("denied a call claiming client %d: %s", claimed, why)
        self.center.rejections.append((-1, claimed, why))
        await context.abort(code, why)
        raise AssertionError("unreachable")  # abort raises

    async def authenticate(self, context: Any, claimed: int) -> int:
        metadata = dict(context.invocation_metadata() or ())
        auth = str(metadata.get("authorization", ""))
        if not auth.startswith("Bearer "):
            await self._deny(context, grpc.StatusCode.UNAUTHENTICATED, claimed, "no bearer token")
        owner = self.tokens.client_for(auth.removeprefix("Bearer "))
        if owner is None:
            await self._deny(context, grpc.StatusCode.UNAUTHENTICATED, claimed, "unknown token")
        if owner != claimed:
            why = f"token of client {owner} used by client {claimed}"
            await self._deny(context, grpc.StatusCode.PERMISSION_DENIED, claimed, why)
        if self.mutual:
            names = context.auth_context().get("x509_common_name", [])
            if client_common_name(owner).encode() not in names:
                why = f"certificate {names} does not belong to client {owner}"
                await self._deny(context, grpc.StatusCode.PERMISSION_DENIED, claimed, why)
        return owner

    async def session(self, request: pb.Hello, context: Any) -> AsyncIterator[pb.Task]:
        cid = await self.authenticate(context, request.client_id)
        try:
            live = request.live_clients
            async for task in self.center.session(cid, run_id=request.run_id, live_clients=live):
                yield _task_pb(task)
        except ProtocolError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    async def download(
        self, request: pb.DownloadRequest, context: Any
    ) -> AsyncIterator[pb.StreamPart]:
        cid = await self.authenticate(context, request.client_id)
        try:
            total, chunks = self.center.download(cid, request.round_idx, request.run_id)
        except ProtocolError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        header = pb.StreamHeader(
            client_id=cid,
            round_idx=request.round_idx,
            total_bytes=total,
            run_id=self.center.run_id,
        )
        yield pb.StreamPart(header=header)
        async for chunk in chunks:
            yield pb.StreamPart(data=chunk)

    async def submit(self, requests: AsyncIterator[pb.StreamPart], context: Any) -> pb.SubmitReply:
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("part") != "header":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "submission lacks a header")
            raise AssertionError("unreachable")  # abort raises
        h = first.header
        cid = await self.authenticate(context, h.client_id)
        header = _upload_header(h, cid)
        accepted, reason = await self.center.submit(header, _data_parts(requests))
        return pb.SubmitReply(accepted=accepted, reason=reason, run_id=self.center.run_id)

    def handler(self) -> grpc.GenericRpcHandler:
        c = self.counter
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Session": grpc.unary_stream_rpc_method_handler(
                    self.session, c.reader(pb.Hello), c.writer(pb.Task)
                ),
                "Download": grpc.unary_stream_rpc_method_handler(
                    self.download, c.reader(pb.DownloadRequest), c.writer(pb.StreamPart)
                ),
                "Submit": grpc.stream_unary_rpc_method_handler(
                    self.submit, c.reader(pb.StreamPart), c.writer(pb.SubmitReply)
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


async def _data_parts(requests: AsyncIterator[pb.StreamPart]) -> AsyncIterator[bytes]:
    async for part in requests:
        if part.WhichOneof("part") != "data":
            raise PayloadError("a submission carries a second header")
        yield part.data


class CenterServer:
    """Serves a :class:`Center` over gRPC; owns the server from enter to exit.

    Args:
        center: the round driver.
        tokens: bearer tokens of the clients.
        address: ``host:port`` to bind (port 0: any free port, see :attr:`port`).
        tls: the server's PEM files (None: plaintext, loopback tests only).
        mutual: require client certificates whose common name matches the token.
        keepalive_s: HTTP/2 ping interval (the sessions' heartbeat).
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
    ) -> None:
        self.center, self.address, self.tls, self.mutual = center, address, tls, mutual
        self._service = _Service(center, tokens, mutual and tls is not None)
        self._server = aio.server(options=_options(center.settings.chunks, keepalive_s))
        self._server.add_generic_rpc_handlers((self._service.handler(),))
        self.port = 0

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

    Every wait has a deadline: opening a session waits at most ``connect_timeout_s``
    for the connection (then :class:`~fedstrata.errors.TransportError`), downloads and
    uploads at most ``call_timeout_s`` (then :class:`~fedstrata.errors.DeadlineError`);
    an open session is watched by HTTP/2 keepalive pings. Each connection attempt is
    logged (INFO), each failure too (WARNING).

    Run identity: the link remembers the run id of the last task its session received
    (:attr:`run_id`) and names it in every download and upload.

    Args:
        target: ``host:port`` of the center.
        client_id: this client.
        token: its bearer token.
        tls: CA (and, for mutual TLS, this client's certificate and key); None: plaintext.
        chunks: chunk size for uploads and the largest accepted download.
        server_name: name to verify in the server certificate (default: from ``target``).
        keepalive_s: HTTP/2 ping interval (the session's heartbeat).
        connect_timeout_s: how long opening a session waits for the connection.
        call_timeout_s: deadline of one download or upload (None: none).
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
        connect_timeout_s: float = 20.0,
        call_timeout_s: float | None = 600.0,
    ) -> None:
        if connect_timeout_s <= 0 or (call_timeout_s is not None and call_timeout_s <= 0):
            raise ConfigError(
                "GrpcLink timeouts must be > 0, got "
                f"connect_timeout_s={connect_timeout_s}, call_timeout_s={call_timeout_s}"
            )
        self.target, self.client_id, self.tls = target, client_id, tls
        self.connect_timeout_s, self.call_timeout_s = connect_timeout_s, call_timeout_s
        self.run_id = ""
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

    async def session(self, live_clients: int = 0) -> AsyncIterator[TaskSpec]:
        """The tasks the center sends this client, until ``DONE``.

        ``live_clients``: an aggregator tier's connected clients (0: a client).

        Raises:
            ProtocolError: the center refused the session.
            TransportError: no connection within ``connect_timeout_s``, or it failed.
        """
        call = self._call("Session", "unary_stream", pb.Hello, pb.Task)
        await self._connect()
        hello = pb.Hello(client_id=self.client_id, run_id=self.run_id, live_clients=live_clients)
        stream = call(hello, metadata=self._metadata)
        try:
            async for msg in stream:
                task = _task(msg)
                self.run_id = task.run_id or self.run_id
                yield task
        except aio.AioRpcError as exc:
            err = _mapped(exc)
            log.warning("client %d: session with %s ended: %s", self.client_id, self.target, err)
            raise err from exc
        finally:  # closing the iterator ends the session at the center too
            stream.cancel()

    async def _connect(self) -> None:
        """Wait for the channel to connect, at most ``connect_timeout_s``."""
        channel = self._channel
        if channel is None:
            raise TransportError("GrpcLink is closed (or used outside its 'async with' block)")
        log.info(
            "client %d: connecting to %s (waiting up to %g s)",
            self.client_id, self.target, self.connect_timeout_s,
        )  # fmt: skip
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await channel.channel_ready()
        except TimeoutError:
            why = f"no connection to {self.target} within {self.connect_timeout_s:g} s"
            log.warning("client %d: %s", self.client_id, why)
            raise TransportError(why) from None
        log.info("client %d: connected to %s", self.client_id, self.target)

    async def download(self, round_idx: int) -> Payload:
        """The model of ``round_idx``, reassembled from its chunks.

        Raises:
            ProtocolError: refused (not selected, stale round).
            PayloadError: a malformed or truncated transfer.
            TransportError: the connection failed.
        """
        call = self._call("Download", "unary_stream", pb.DownloadRequest, pb.StreamPart)
        request = pb.DownloadRequest(
            client_id=self.client_id, round_idx=round_idx, run_id=self.run_id
        )
        reassembler: Reassembler | None = None
        try:
            async for part in call(request, metadata=self._metadata, timeout=self.call_timeout_s):
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
            run_id=self.run_id,
        )
        return await self._stream_up(header, payload.to_bytes())

    async def submit_partial(
        self, round_idx: int, data: bytes, live_clients: int = 0
    ) -> tuple[bool, str]:
        """Stream an aggregator's partial (:func:`~fedstrata.runtime.center.encode_partial`).

        ``live_clients``: the tier's connected clients now.

        Raises:
            ProtocolError: the call was refused (authentication).
            TransportError: the connection failed.
        """
        header = pb.StreamHeader(
            client_id=self.client_id,
            round_idx=round_idx,
            content=pb.StreamHeader.PARTIAL,
            run_id=self.run_id,
            live_clients=live_clients,
        )
        return await self._stream_up(header, data)

    async def report_live(self, live_clients: int) -> None:
        """An aggregator tier's number of connected clients, between partials (a
        ``PARTIAL`` header without data).

        Raises:
            ProtocolError: the call was refused.
            TransportError: the connection failed.
        """
        header = pb.StreamHeader(
            client_id=self.client_id,
            round_idx=-1,
            content=pb.StreamHeader.PARTIAL,
            run_id=self.run_id,
            live_clients=live_clients,
        )
        accepted, reason = await self._stream_up(header, b"")
        if not accepted:
            log.warning("tier %d: live-client report refused: %s", self.client_id, reason)

    async def _stream_up(self, header: pb.StreamHeader, data: bytes) -> tuple[bool, str]:
        call = self._call("Submit", "stream_unary", pb.StreamPart, pb.SubmitReply)
        header.total_bytes = len(data)

        async def parts() -> AsyncIterator[pb.StreamPart]:
            yield pb.StreamPart(header=header)
            for chunk in iter_chunks(data, self.chunks.chunk_bytes):
                yield pb.StreamPart(data=chunk)

        try:
            reply: pb.SubmitReply = await call(
                parts(), metadata=self._metadata, timeout=self.call_timeout_s
            )
        except aio.AioRpcError as exc:
            raise _mapped(exc) from exc
        return reply.accepted, reply.reason
