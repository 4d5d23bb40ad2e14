"""The client side of the runtime's gRPC service: :class:`GrpcLink`.

:class:`GrpcLink` (an async context manager that owns the channel) is how a client
agent or a tier aggregator talks to its parent. gRPC exceptions never leave this module
unmapped: callers see :class:`~fedstrata.errors.ProtocolError` (rejected by the
center), :class:`~fedstrata.errors.DeadlineError` or
:class:`~fedstrata.errors.TransportError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from grpc import aio

from fedstrata.core.payload import Payload
from fedstrata.errors import (
    ConfigError,
    DeadlineError,
    FedstrataError,
    NodeClaimedError,
    PayloadError,
    ProtocolError,
    RunEndedError,
    TransportError,
)
from fedstrata.runtime.center import TaskSpec
from fedstrata.runtime.downlink import DownlinkAsk
from fedstrata.runtime.pbconv import (
    SERVICE,
    downlink_request,
    grpc_options,
    partial_header_pb,
    profile_to_pb,
    task_from_pb,
    update_header_pb,
)
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.sched_reports import DeviceReport, RoundTimings
from fedstrata.runtime.security import TlsFiles, channel_credentials
from fedstrata.runtime.tier_pbconv import put_profiles, put_reports
from fedstrata.runtime.tier_work import MemberReport
from fedstrata.runtime.transport import ChunkPlan, Reassembler, iter_chunks

__all__ = ["GrpcLink"]

log = logging.getLogger(__name__)


def _mapped(exc: aio.AioRpcError) -> FedstrataError:
    code, detail = exc.code(), exc.details() or ""
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return ProtocolError(f"center refused the call ({code.name}): {detail}")
    if code is grpc.StatusCode.ALREADY_EXISTS:
        return NodeClaimedError(f"center refused the session ({code.name}): {detail}")
    if code is grpc.StatusCode.OUT_OF_RANGE:
        return RunEndedError(f"center refused the session ({code.name}): {detail}")
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
        self._options: list[tuple[str, Any]] = list(grpc_options(self.chunks, keepalive_s))
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

    async def session(
        self,
        live_clients: int = 0,
        profile: DeviceReport | None = None,
        node: str = "",
        *,
        profiles: Mapping[int, DeviceReport] | None = None,
    ) -> AsyncIterator[TaskSpec]:
        """The tasks the center sends this client, until ``DONE``.

        ``live_clients``: an aggregator tier's connected clients (0: a client);
        ``profile``: this client's device, for the center's scheduler; ``node``: an
        aggregator tier's node of the tree ("": none); ``profiles``: an explicit tree's
        edge forwards its clients' (:mod:`~fedstrata.runtime.tier_sched`).

        Raises:
            ProtocolError: the center refused the session.
            TransportError: no connection within ``connect_timeout_s``, or it failed.
        """
        call = self._call("Session", "unary_stream", pb.Hello, pb.Task)
        await self._connect()
        hello = pb.Hello(
            client_id=self.client_id, run_id=self.run_id, live_clients=live_clients,
            tier_node=node,
        )  # fmt: skip
        if profile is not None:
            hello.profile.CopyFrom(profile_to_pb(profile))
        put_profiles(hello, profiles or {})
        stream = call(hello, metadata=self._metadata)
        try:
            async for msg in stream:
                task = task_from_pb(msg)
                self.run_id = task.run_id or self.run_id
                yield task
        except aio.AioRpcError as exc:
            err = _mapped(exc)
            log.warning("client %d: session with %s ended: %s", self.client_id, self.target, err)
            raise err from exc
        finally:  # closing the iterator ends the session at the center too
            stream.cancel()

    async def probe(self, timeout_s: float) -> bool:
        """Whether the channel connects within ``timeout_s``; False at once when the
        target refuses the connection (nothing listens there)."""
        channel = self._channel
        if channel is None:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                state = channel.get_state(try_to_connect=True)
                while state is not grpc.ChannelConnectivity.READY:
                    if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                        return False
                    await channel.wait_for_state_change(state)
                    state = channel.get_state(try_to_connect=True)
        except TimeoutError:
            return False
        return True

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
        return (await self._download(round_idx, None)).payload()

    async def download_downlink(self, round_idx: int, ask: DownlinkAsk) -> bytes:
        """The serialised downlink message of ``round_idx`` for a client holding
        ``ask.version`` (:mod:`fedstrata.runtime.downlink`).

        Raises:
            ProtocolError: refused (not selected, stale round, downlink off).
            PayloadError: a malformed or truncated transfer.
            TransportError: the connection failed.
        """
        return (await self._download(round_idx, ask)).data()

    async def download_eval(self, round_idx: int) -> Payload:
        """The dense model of an ``EVALUATE`` task's round (federated evaluation).

        Raises:
            ProtocolError: refused; PayloadError: a malformed transfer;
            TransportError: the connection failed.
        """
        return (await self._download(round_idx, None, evaluation=True)).payload()

    async def submit_eval(self, round_idx: int, report: bytes) -> tuple[bool, str]:
        """Send an ``EvalReport`` (:mod:`fedstrata.runtime.fedeval_parts`); returns
        (accepted, reason). Raises: ProtocolError, TransportError."""
        header = pb.StreamHeader(
            client_id=self.client_id, round_idx=round_idx, run_id=self.run_id, evaluation=True
        )
        return await self._stream_up(header, report)

    async def _download(
        self, round_idx: int, ask: DownlinkAsk | None, *, evaluation: bool = False
    ) -> Reassembler:
        call = self._call("Download", "unary_stream", pb.DownloadRequest, pb.StreamPart)
        request = downlink_request(self.client_id, round_idx, self.run_id, ask)
        request.evaluation = evaluation
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
        return reassembler

    async def submit(
        self,
        round_idx: int,
        payload: Payload,
        num_examples: int,
        metrics: Mapping[str, float],
        timings: RoundTimings | None = None,
    ) -> tuple[bool, str]:
        """Stream one update in chunks; returns (accepted, reason). ``timings``: the
        round as this client measured it (for the center's scheduler).

        Raises:
            ProtocolError: the call was refused (authentication).
            TransportError: the connection failed.
        """
        header = update_header_pb(
            self.client_id, round_idx, self.run_id, num_examples=num_examples,
            metrics=metrics, timings=timings,
        )  # fmt: skip
        return await self._stream_up(header, payload.to_bytes())

    async def submit_partial(
        self,
        round_idx: int,
        data: bytes,
        live_clients: int = 0,
        *,
        reports: Sequence[MemberReport] = (),
        profiles: Mapping[int, DeviceReport] | None = None,
    ) -> tuple[bool, str]:
        """Stream an aggregator's partial (:func:`~fedstrata.runtime.center.encode_partial`).

        ``live_clients``: the tier's connected clients now; ``reports`` and
        ``profiles``: an explicit tree's edge reports its cohort members and forwards
        its clients' devices (:mod:`~fedstrata.runtime.tier_sched`).

        Raises:
            ProtocolError: the call was refused (authentication).
            TransportError: the connection failed.
        """
        header = partial_header_pb(self.client_id, round_idx, self.run_id, live_clients)
        put_reports(header, reports)
        put_profiles(header, profiles or {})
        return await self._stream_up(header, data)

    async def report_live(self, live_clients: int) -> None:
        """An aggregator tier's number of connected clients, between partials (a
        ``PARTIAL`` header without data).

        Raises:
            ProtocolError: the call was refused.
            TransportError: the connection failed.
        """
        header = partial_header_pb(self.client_id, -1, self.run_id, live_clients)
        accepted, reason = await self._stream_up(header, b"")
        if not accepted:
            log.warning("tier %d: live-client report refused: %s", self.client_id, reason)

    async def secagg_step(
        self,
        round_idx: int,
        phase: int,
        data: bytes,
        *,
        metrics: Mapping[str, float] | None = None,
        support_seed: int = 0,
        timings: RoundTimings | None = None,
        num_examples: int = 0,
    ) -> tuple[bool, str, bytes]:
        """One secure-aggregation step (:mod:`~fedstrata.runtime.secagg_wire`); returns
        (accepted, reason, the center's answer) once the center closed the step.
        ``timings``: the ``INPUT`` step's measured round, for the center's scheduler;
        ``num_examples``: its examples (the weight of its metrics at the center).

        Raises:
            ProtocolError: the call was refused (authentication).
            TransportError: the connection failed.
        """
        header = update_header_pb(
            self.client_id, round_idx, self.run_id, num_examples=num_examples,
            metrics=metrics, timings=timings,
        )  # fmt: skip
        header.secagg_phase, header.secagg_support_seed = phase, support_seed  # type: ignore[assignment]
        reply = await self._send(header, data)
        return reply.accepted, reply.reason, reply.secagg_message

    async def _stream_up(self, header: pb.StreamHeader, data: bytes) -> tuple[bool, str]:
        reply = await self._send(header, data)
        return reply.accepted, reply.reason

    async def _send(self, header: pb.StreamHeader, data: bytes) -> pb.SubmitReply:
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
        return reply
