"""Admission control, deadlines and refusal logging of the runtime's gRPC server.

A gRPC server that reads before it authenticates, never times a call out and admits
any number of calls lets anyone on the network hold its memory (issue 11, defect 5).
``wire.py`` therefore authenticates every call from its metadata *before* reading a
message, and uses the pieces here:

* :class:`ServerLimits`: the caps and deadlines (per client, overall, per HTTP/2
  connection; idle and per-call timeouts) a :class:`~fedstrata.runtime.wire.CenterServer`
  enforces.
* :class:`Admission`: counts the calls the server holds (all of them, and those of each
  authenticated client) and refuses a call over a cap.
* :class:`RefusalLog`: every refusal is counted by kind and logged at WARNING with its
  reason; a flood is rate limited (the first ``log_burst`` of a kind per window one by
  one, then one line with the count), so the log cannot be flooded either.
* :class:`Refused`: a refusal on its way to the gRPC status (``code``, ``kind``).
* :class:`CallGuard`: the per-call sequence for the service's handlers: authenticate
  from metadata, admit, time the call; read each message under the idle timeout and
  parse it under a size limit; log and abort on a refusal.

Ownership and cancellation: the server owns one :class:`CallGuard` (which owns the
rest); nothing here starts tasks. Deadlines are ``asyncio.timeout`` scopes inside the
handler's own task, so cancelling the call cancels them; the refusal log reads time
from the injected clock only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from fedstrata.core.clock import Clock, MonotonicClock
from fedstrata.errors import ConfigError, ProtocolError
from fedstrata.runtime.security import TokenTable, client_common_name
from fedstrata.runtime.transport import MAX_CHUNK_BYTES, ChunkPlan

__all__ = [
    "CONTROL_LIMIT_BYTES",
    "Admission",
    "CallGuard",
    "RefusalLog",
    "Refused",
    "ServerLimits",
    "hard_limit_bytes",
    "server_options",
]

log = logging.getLogger(__name__)

CONTROL_LIMIT_BYTES = 64 << 10  # Hello and DownloadRequest: a few bytes


def hard_limit_bytes(chunk_limit_bytes: int) -> int:
    """gRPC core's receive limit: one more chunk of slack over the handlers' limit.

    Below it a handler refuses an oversized message naming its size; over it gRPC core
    refuses the message before the handler sees it.
    """
    return chunk_limit_bytes + MAX_CHUNK_BYTES


def server_options(
    base: list[tuple[str, int]], chunks: ChunkPlan, limits: ServerLimits
) -> list[tuple[str, int]]:
    """A server's channel options: ``base`` (the link's), its receive limit raised to
    :func:`hard_limit_bytes`, and the caps and timeouts of ``limits``."""
    idle_ms = int(limits.idle_timeout_s * 1000)
    kept = [o for o in base if o[0] != "grpc.max_receive_message_length"]
    return [
        *kept,
        ("grpc.max_receive_message_length", hard_limit_bytes(chunks.message_limit_bytes)),
        ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
        ("grpc.max_connection_idle_ms", idle_ms),
        ("grpc.server_handshake_timeout_ms", idle_ms),
        ("grpc.server.max_pending_requests", max(1, limits.max_pending_calls // 2)),
        ("grpc.server.max_pending_requests_hard_limit", limits.max_pending_calls),
    ]


@dataclass(frozen=True)
class ServerLimits:
    """What a runtime server admits, and for how long.

    Attributes:
        max_calls_per_client: concurrent calls of one authenticated client (a client
            holds its ``Session`` plus one ``Download`` or ``Submit``; the slack covers
            a reconnection that overlaps its superseded session).
        max_calls: concurrent authenticated calls in all (None: 3 per token + 64).
        max_streams_per_connection: HTTP/2 ``SETTINGS_MAX_CONCURRENT_STREAMS``; streams
            past it wait or are reset by gRPC core (``REFUSED_STREAM``) before any
            handler runs. Clients in one process with the same channel options share
            one connection, hence the high default.
        max_pending_calls: calls gRPC core queues for the handlers; past half of it core
            sheds new calls at random, past all of it every new one (``CANCELLED``,
            before any handler runs, so only the peer sees it). Under a flood the
            handlers refuse unauthenticated calls in well under a millisecond each, so
            the queue stays short; this bounds it when they cannot keep up.
        idle_timeout_s: longest wait for a peer's next message (and for a connection
            without calls, or a TLS handshake); the call is then refused as idle.
        call_timeout_s: ``Download`` and ``Submit`` end by then (None: no limit);
            ``Session`` is exempt (it lasts the run; keepalive pings are its heartbeat).
        log_burst: refusals of one kind logged one by one per window.
        log_window_s: the window of ``log_burst``; a count of the rest follows.
    """

    max_calls_per_client: int = 8
    max_calls: int | None = None
    max_streams_per_connection: int = 1024
    max_pending_calls: int = 8192
    idle_timeout_s: float = 60.0
    call_timeout_s: float | None = 3600.0
    log_burst: int = 5
    log_window_s: float = 60.0

    def __post_init__(self) -> None:
        counts = ("max_calls_per_client", "max_streams_per_connection", "max_pending_calls")
        for name in (*counts, "log_burst"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ServerLimits.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_calls is not None and self.max_calls < 1:
            raise ConfigError(f"ServerLimits.max_calls must be >= 1, got {self.max_calls}")
        for name in ("idle_timeout_s", "call_timeout_s", "log_window_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"ServerLimits.{name} must be > 0, got {value}")

    def total_cap(self, num_tokens: int) -> int:
        """The overall cap for a server that knows ``num_tokens`` clients."""
        return self.max_calls if self.max_calls is not None else 3 * num_tokens + 64


class Refused(ProtocolError):
    """A call refused by the server: ``code`` goes to the peer, ``kind`` to the counts.

    Kinds: ``unauthenticated``, ``permission``, ``capacity``, ``idle``, ``deadline``,
    ``malformed``, ``oversized``, ``truncated``.
    """

    def __init__(self, code: grpc.StatusCode, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.kind, self.reason = code, kind, reason


class Admission:
    """Counts held calls; :meth:`admit` refuses one over a cap.

    Attributes:
        open_calls: calls inside a handler now (authenticated or not).
        peak_open_calls: the most ever at once.
        held: authenticated calls admitted and not yet released.
    """

    def __init__(self, limits: ServerLimits, num_tokens: int) -> None:
        self.per_client_cap = limits.max_calls_per_client
        self.total_cap = limits.total_cap(num_tokens)
        self._by_client: Counter[int] = Counter()
        self.held = 0
        self.open_calls = 0
        self.peak_open_calls = 0

    def opened(self) -> None:
        """A handler started (before authentication)."""
        self.open_calls += 1
        self.peak_open_calls = max(self.peak_open_calls, self.open_calls)

    def closed(self) -> None:
        """A handler ended."""
        self.open_calls -= 1

    def admit(self, client_id: int) -> None:
        """Admit one call of an authenticated client.

        Raises:
            Refused: the client or the server is at its cap (``RESOURCE_EXHAUSTED``).
        """
        if self._by_client[client_id] >= self.per_client_cap:
            why = f"client {client_id} already holds {self.per_client_cap} calls (the cap)"
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "capacity", why)
        if self.held >= self.total_cap:
            why = f"the server holds {self.total_cap} calls (the cap)"
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "capacity", why)
        self._by_client[client_id] += 1
        self.held += 1

    def release(self, client_id: int) -> None:
        """Release a call :meth:`admit` admitted."""
        self.held -= 1
        self._by_client[client_id] -= 1
        if self._by_client[client_id] <= 0:
            del self._by_client[client_id]

    def calls_of(self, client_id: int) -> int:
        """Calls ``client_id`` holds now."""
        return self._by_client[client_id]


class RefusalLog:
    """Counts refusals by kind and logs them at WARNING, rate limited per kind.

    Attributes:
        counts: refusals so far, by kind (a fixed, small set of keys).
    """

    def __init__(self, limits: ServerLimits, clock: Clock | None = None) -> None:
        self.burst, self.window_s = limits.log_burst, limits.log_window_s
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.counts: Counter[str] = Counter()
        self._windows: dict[str, tuple[float, int]] = {}  # kind -> (start, seen in it)

    def note(self, refusal: Refused, peer: str, call: str) -> None:
        """Count one refusal; log it unless its kind is over the burst in this window."""
        kind, now = refusal.kind, self.clock.now()
        self.counts[kind] += 1
        start, seen = self._windows.get(kind, (now, 0))
        if now - start >= self.window_s:
            self._summarise(kind, seen, now - start)
            start, seen = now, 0
        seen += 1
        self._windows[kind] = (start, seen)
        if seen <= self.burst:
            log.warning("refused %s from %s (%s): %s", call, peer, kind, refusal.reason)
        elif seen == self.burst + 1:
            log.warning(
                "more %s refusals follow; counting them, one line per %g s", kind, self.window_s
            )

    def flush(self) -> None:
        """Log the counts not yet logged (the server is stopping)."""
        now = self.clock.now()
        for kind, (start, seen) in sorted(self._windows.items()):
            self._summarise(kind, seen, now - start)
        self._windows.clear()

    def _summarise(self, kind: str, seen: int, span_s: float) -> None:
        if seen > self.burst:
            log.warning(
                "refused %d more calls (%s) in %.1f s; %d %s refusals in all",
                seen - self.burst,
                kind,
                span_s,
                self.counts[kind],
                kind,
            )


class CallGuard:
    """Authenticates, admits, times and reads the calls of one server's handlers.

    Args:
        tokens: the bearer tokens the server accepts.
        limits: caps and deadlines.
        mutual: check that the client certificate belongs to the token's client.
        chunk_limit: the largest message a handler parses (one chunk plus framing).
        clock: time of the refusal log's windows.

    Attributes:
        on_read: called with the size of every message read (byte accounting).
    """

    def __init__(
        self,
        tokens: TokenTable,
        limits: ServerLimits,
        *,
        mutual: bool,
        chunk_limit: int,
        clock: Clock | None = None,
    ) -> None:
        self.tokens, self.limits, self.mutual = tokens, limits, mutual
        self.admission = Admission(limits, len(tokens))
        self.refusals = RefusalLog(limits, clock)
        self.hard_limit = hard_limit_bytes(chunk_limit)
        self.on_read: Callable[[int], None] = lambda _size: None

    @asynccontextmanager
    async def guarded(self, context: Any, call: str) -> AsyncIterator[int]:
        """Authenticate, admit and time ``call``; yields the client id.

        A :class:`Refused` raised inside (or here) is logged, then aborts the call.
        """
        self.admission.opened()
        try:
            cid = self.authenticate(context)
            self.admission.admit(cid)
            timeout_s = None if call == "Session" else self.limits.call_timeout_s
            try:
                async with asyncio.timeout(timeout_s):
                    yield cid
            except TimeoutError:
                why = f"call not done after {timeout_s:g} s"
                raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", why) from None
            finally:
                self.admission.release(cid)
        except Refused as exc:
            self.refusals.note(exc, str(context.peer()), call)
            await context.abort(exc.code, exc.reason)
        finally:
            self.admission.closed()

    def authenticate(self, context: Any) -> int:
        """The client whose token (and, under mutual TLS, certificate) the call carries.

        Raises:
            Refused: no or an unknown token; a certificate of another client.
        """
        metadata = dict(context.invocation_metadata() or ())
        auth = str(metadata.get("authorization", ""))
        if not auth.startswith("Bearer "):
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", "no bearer token")
        owner = self.tokens.client_for(auth.removeprefix("Bearer "))
        if owner is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", "unknown token")
        if self.mutual:
            names = context.auth_context().get("x509_common_name", [])
            if client_common_name(owner).encode() not in names:
                holder = _certificate_client(names)
                who = f"client {holder}" if holder is not None else "an unknown client"
                why = f"token of client {owner} used by {who} (certificate {names})"
                raise Refused(grpc.StatusCode.PERMISSION_DENIED, "permission", why)
        return owner

    @staticmethod
    def check_claim(owner: int, claimed: int) -> None:
        """Refuse a message that names another client than the token's.

        Raises:
            Refused: ``claimed`` is not ``owner`` (``PERMISSION_DENIED``).
        """
        if owner != claimed:
            why = f"token of client {owner} used by client {claimed}"
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "permission", why)

    async def next(self, context: Any) -> bytes | None:
        """The peer's next message (None at its end) within the idle timeout.

        Raises:
            Refused: no message within ``idle_timeout_s``.
        """
        try:
            async with asyncio.timeout(self.limits.idle_timeout_s):
                data = await context.read()
        except TimeoutError:
            why = f"no message for {self.limits.idle_timeout_s:g} s"
            raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "idle", why) from None
        return None if data is aio.EOF else bytes(data)

    def parse(self, data: bytes, cls: Any, what: str, limit: int) -> Any:
        """``data`` as a ``cls`` message.

        Raises:
            Refused: over ``limit`` bytes, or not a ``cls`` message.
        """
        self.on_read(len(data))
        if len(data) > limit:
            why = f"{what}: message of {len(data)} bytes over the limit of {limit} bytes"
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "oversized", why)
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            why = f"{what}: {len(data)} bytes are not a {cls.__name__} message ({exc})"
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed", why) from None

    async def first(self, context: Any, cls: Any, what: str, limit: int) -> Any:
        """The call's first message, parsed.

        Raises:
            Refused: none came (or gRPC core refused one over its hard limit), or as
                :meth:`next` and :meth:`parse`.
        """
        data = await self.next(context)
        if data is None:
            why = (
                f"{what} ended before its first message (or sent one over gRPC's limit of"
                f" {self.hard_limit} bytes)"
            )
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "truncated", why)
        return self.parse(data, cls, what, limit)


def _certificate_client(names: list[bytes]) -> int | None:
    """The client id a certificate's common name(s) name, if exactly one."""
    prefix = client_common_name(0).removesuffix("0")
    ids = set()
    for name in names:
        text = name.decode(errors="replace")
        if text.startswith(prefix) and text[len(prefix) :].isdigit():
            ids.add(int(text[len(prefix) :]))
    return ids.pop() if len(ids) == 1 else None
