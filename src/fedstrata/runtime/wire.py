"""gRPC service of the runtime (``proto/fedstrata.proto``); the client side is
:mod:`fedstrata.runtime.link`.

The service is registered through generic handlers over the generated message
classes, so no untyped stub code is involved. :class:`CenterServer` (an async context
manager that owns the gRPC server) authenticates every call before it reaches the
:class:`~fedstrata.runtime.center.Center`.

Liveness: a client holds one ``Session`` stream for its life; HTTP/2 keepalive pings
(``keepalive_s``) are its heartbeat, so a dead or partitioned client ends its session
and is failed in the open round without timers in the round logic.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from fedstrata.core.clock import Clock
from fedstrata.errors import (
    NodeClaimedError,
    PayloadError,
    ProtocolError,
    RunEndedError,
    TransportError,
)
from fedstrata.runtime.center import Center
from fedstrata.runtime.fedeval_parts import eval_download, eval_submit
from fedstrata.runtime.guard import (
    CONTROL_LIMIT_BYTES,
    Admission,
    CallGuard,
    Refused,
    ServerLimits,
    server_options,
)
from fedstrata.runtime.pbconv import (
    SERVICE,
    downlink_ask,
    grpc_options,
    profile_from_pb,
    task_to_pb,
    upload_header,
)
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.security import (
    TlsFiles,
    TokenTable,
    server_credentials,
)
from fedstrata.runtime.tier_pbconv import profiles_from_pb

__all__ = ["SERVICE", "CenterServer", "WireCounter"]

log = logging.getLogger(__name__)


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
                live, profile = hello.live_clients, profile_from_pb(hello)
                tasks = self.center.session(
                    cid, run_id=hello.run_id, live_clients=live, profile=profile,
                    node=hello.tier_node, profiles=profiles_from_pb(hello),
                )  # fmt: skip
                async for task in tasks:
                    await context.write(task_to_pb(task))
            except RunEndedError as exc:  # a typed refusal: the participant stops calling
                await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
            except NodeClaimedError as exc:  # another live tier serves that node
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
            except ProtocolError as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    async def download(self, _requests: object, context: Any) -> None:
        async with self.guard.guarded(context, "Download") as cid:
            request = await self.guard.first(
                context, pb.DownloadRequest, "Download", CONTROL_LIMIT_BYTES
            )
            self.guard.check_claim(cid, request.client_id)
            try:
                if request.evaluation:  # federated evaluation's model (fedeval.py)
                    total, chunks = eval_download(self.center, cid, request)
                else:
                    ask = downlink_ask(request)
                    total, chunks = self.center.download(
                        cid, request.round_idx, request.run_id, ask
                    )
            except ProtocolError as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            header = pb.StreamHeader(
                client_id=cid,
                round_idx=request.round_idx,
                total_bytes=total,
                run_id=self.center.run_id,
            )
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
            header = upload_header(h, cid)
            if header.evaluation:  # federated evaluation results (fedeval.py)
                limit = self.center.settings.chunks.max_total_bytes
                ok, why = await eval_submit(self.center, header, self._data_parts(context), limit)
                return pb.SubmitReply(accepted=ok, reason=why, run_id=self.center.run_id)
            secure = getattr(self.center, "secure", None)
            if secure is not None and not header.partial:  # a secure-aggregation step
                run_id, limit = self.center.run_id, self.center.settings.chunks.max_total_bytes
                ok, why, answer = await secure.submit(
                    header, self._data_parts(context), run_id=run_id, limit=limit
                )
                return pb.SubmitReply(
                    accepted=ok, reason=why, run_id=run_id, secagg_message=answer
                )
            accepted, reason = await self.center.submit(header, self._data_parts(context))
            return pb.SubmitReply(accepted=accepted, reason=reason, run_id=self.center.run_id)
        raise AssertionError("unreachable")  # a refusal aborts the call

    async def _data_parts(self, context: Any) -> AsyncIterator[bytes]:
        """The chunks after a submission's header (refusals end the upload with a reason)."""
        while (data := await self.guard.next(context)) is not None:
            part = self.guard.parse(data, pb.StreamPart, "Submit chunk", self.chunk_limit)
            if part.WhichOneof("part") != "data":
                raise PayloadError("a submission carries a second header")
            self.counter.data += len(data) + GRPC_PREFIX_BYTES
            self.counter.payload += len(part.data)
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


DRAIN_LIMIT_S = 5.0  # the most a finished center waits for sessions to take DONE
GRPC_PREFIX_BYTES = 5  # each gRPC message: 1-byte flag + 4-byte length, then the message


class WireCounter:
    """gRPC message bytes a server received and sent (messages plus their 5-byte prefix).

    HTTP/2 frame headers, TLS records and TCP/IP headers are below this count.
    :attr:`data` is the part of :attr:`total` in messages that carry data (chunks of a
    model, an update, a partial or a secure-aggregation step, and the center's answers
    to steps): the messages a simulator counts; the rest is control (sessions and
    tasks, download requests, stream headers, plain submit replies). :attr:`payload` is
    the data itself (the bytes of the chunks and answers, without their framing).
    """

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0
        self.data = 0
        self.payload = 0

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
            carried = _carried(msg)
            if carried:
                self.data += len(data) + GRPC_PREFIX_BYTES
                self.payload += carried
            return data

        return write


def _carried(msg: Any) -> int:
    """Bytes of data a sent message carries (0: a control message)."""
    if isinstance(msg, pb.StreamPart):
        return len(msg.data) if msg.WhichOneof("part") == "data" else 0
    return len(msg.secagg_message) if isinstance(msg, pb.SubmitReply) else 0


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
        options = server_options(grpc_options(chunks, keepalive_s), chunks, self.limits)
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
        if exc_type is None and self.center.finished:
            await self._drain(DRAIN_LIMIT_S)
        await self._server.stop(grace=1.0)
        self._service.guard.refusals.flush()

    async def _drain(self, limit_s: float) -> None:
        """Wait (at most ``limit_s``) for every session to take its ``DONE`` and end,
        so that no participant is cut off mid-stream and left to reconnect to a center
        that is gone. A participant that reconnects meanwhile is refused with
        :class:`~fedstrata.errors.RunEndedError`."""
        loop = asyncio.get_running_loop()
        end = loop.time() + limit_s
        while self.center.connected and loop.time() < end:
            await asyncio.sleep(0.02)
        if self.center.connected:
            log.warning(
                "center: %d sessions still open %.0f s after the run ended; closing them",
                self.center.connected, limit_s,
            )  # fmt: skip

    async def abort(self) -> None:
        """Stop serving at once: calls in flight break (a fenced center: no reply, no
        ``DONE``, as if the process had died)."""
        await self._server.stop(grace=0)

    @property
    def target(self) -> str:
        """``host:port`` clients dial (the bound port substituted)."""
        host = self.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"
