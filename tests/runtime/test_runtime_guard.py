"""The runtime server under abuse: floods, idle streams, oversized and garbage messages."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import rthelpers
from grpc import aio

from fedstrata.api import run
from fedstrata.core.payload import CodecId, Payload
from fedstrata.errors import ConfigError, FedstrataError, ProtocolError
from fedstrata.runtime import (
    CenterServer,
    ChunkPlan,
    GrpcLink,
    ServerLimits,
    TokenTable,
    make_dev_pki,
)
from fedstrata.runtime.guard import Admission, RefusalLog, Refused
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.records import TaskKind, TaskSpec
from fedstrata.runtime.security import channel_credentials
from fedstrata.runtime.wire import SERVICE

GUARD_LOG = "fedstrata.runtime"
TOKENS = {0: "token-zero", 1: "token-one", 2: "token-two"}


@pytest.fixture(scope="module")
def sim_params(small_config):
    return run(small_config).simulation.params


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_dev_pki(tmp_path_factory.mktemp("pki"), range(3))


class _FakeCenter:
    """The three entry points of a Center, without rounds: uploads are read and counted."""

    finished = False  # never ends a run: the server does not drain at exit
    connected = 0

    def __init__(self, chunk_bytes: int = 1024) -> None:
        self.settings = SimpleNamespace(chunks=ChunkPlan(chunk_bytes=chunk_bytes))

    async def session(self, client_id):
        yield TaskSpec(TaskKind.DONE)

    def download(self, client_id, round_idx):
        raise ProtocolError("no round is open")

    async def submit(self, header, chunks):
        try:
            async for _ in chunks:
                pass
        except FedstrataError as exc:
            return False, str(exc)
        return True, ""


def _metadata(token):
    return () if token is None else (("authorization", f"Bearer {token}"),)


async def _raw_submit(channel, messages, token, *, hold=None):
    """A Submit of raw ``messages`` (bytes); ``hold``: an event the stream then waits on."""

    async def parts():
        for msg in messages:
            yield msg
        if hold is not None:
            await hold.wait()

    call = channel.stream_unary(f"/{SERVICE}/Submit")
    try:
        await call(parts(), metadata=_metadata(token))
    except aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


async def _flood(target, *, streams, channels, token, first=()):
    """``streams`` idle Submit streams over ``channels`` connections; their final codes.

    Odd streams send nothing at all; even ones send ``first``, then wait.
    """
    never = asyncio.Event()
    opts = [("grpc.use_local_subchannel_pool", 1)]
    chans = [aio.insecure_channel(target, options=opts) for _ in range(channels)]
    try:
        async with asyncio.timeout(120):  # without the guard idle streams stay open for good
            calls = [
                _raw_submit(chans[i % channels], first if i % 2 == 0 else (), token, hold=never)
                for i in range(streams)
            ]
            return [code for code, _ in await asyncio.gather(*calls)]
    finally:
        for chan in chans:
            await chan.close()


def test_unauthenticated_flood_is_refused_bounded_and_the_model_is_unchanged(
    small_deployment, federation, sim_params, monkeypatch, caplog
):
    """Issue 11 defect 5 (must show): 2,000 idle unauthenticated Submit streams.

    Half send nothing, half a header declaring 1 GiB. Each is refused from its
    metadata before any message is read (the server's received-bytes count equals
    the run without the flood), all are closed, the held
    calls return to the honest federation's, the refusals are counted and logged with
    their reason but rate limited, and the honest federation trains the same model.
    """
    servers = []

    class Recording(CenterServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            servers.append(self)

    monkeypatch.setattr(rthelpers, "CenterServer", Recording)
    baseline, _ = asyncio.run(federation(small_deployment))
    codes = []

    async def intruder(target):
        header = pb.StreamPart(header=pb.StreamHeader(client_id=0, total_bytes=1 << 30))
        first = (header.SerializeToString(),)
        codes.extend(await _flood(target, streams=2000, channels=25, token="nope", first=first))

    with caplog.at_level(logging.WARNING, logger=GUARD_LOG):
        result, _ = asyncio.run(federation(small_deployment, intruder=intruder))
    clean, flooded = servers
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 2000
    assert flooded.refusals["unauthenticated"] == 2000
    assert flooded.counter.received == clean.counter.received  # not one flood byte read
    assert flooded.admission.open_calls == 0
    assert flooded.admission.held == 0
    assert flooded.admission.peak_open_calls < 500
    guard_lines = [r for r in caplog.records if r.name.endswith("guard")]
    assert "unknown token" in caplog.text
    assert "refused 1995 more calls (unauthenticated)" in caplog.text
    assert len(guard_lines) < 20
    assert result.params.tobytes() == baseline.params.tobytes() == sim_params.tobytes()


def _settled(server, held, calls):
    return server.admission.held == held and server.refusals["capacity"] + held == calls


async def _until(condition, timeout_s=30.0):
    """Poll ``condition`` (server state moved by real network calls) until it holds."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def test_idle_streams_are_closed_and_calls_capped_per_client_and_overall(caplog):
    """Issue 11 defect 5: an authenticated client's idle streams are closed after the
    idle timeout, calls over the per-client and overall caps are refused at once, and
    every refusal is logged with its reason."""
    limits = ServerLimits(idle_timeout_s=2.0, max_calls_per_client=3, max_calls=4)

    async def main():
        server = CenterServer(_FakeCenter(), TokenTable(TOKENS), limits=limits)
        async with server, aio.insecure_channel(server.target) as chan:
            never = asyncio.Event()
            calls = []
            for cid, count, held in ((0, 5, 3), (1, 1, 4), (2, 1, 4)):
                for _ in range(count):
                    calls.append(
                        asyncio.create_task(_raw_submit(chan, (), TOKENS[cid], hold=never))
                    )
                n = len(calls)
                await _until(lambda held=held, n=n: _settled(server, held, n))
            codes = [code for code, _ in await asyncio.gather(*calls)]
            return codes, server

    with caplog.at_level(logging.WARNING, logger=GUARD_LOG):
        codes, server = asyncio.run(main())
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 3  # 2 of client 0, 1 overall
    assert codes.count(grpc.StatusCode.DEADLINE_EXCEEDED) == 4  # the admitted, idle ones
    assert server.refusals == {"capacity": 3, "idle": 4}
    assert server.admission.held == 0
    assert "client 0 already holds 3 calls" in caplog.text
    assert "the server holds 4 calls" in caplog.text
    assert "no message for 2 s" in caplog.text


def test_a_call_past_its_deadline_is_closed_even_when_not_idle(caplog):
    """Issue 11 defect 5: per-call deadline; a Submit that trickles chunks forever ends."""
    limits = ServerLimits(idle_timeout_s=5.0, call_timeout_s=0.5)

    async def main():
        server = CenterServer(_FakeCenter(), TokenTable(TOKENS), limits=limits)
        async with server, aio.insecure_channel(server.target) as chan:

            async def trickle():
                yield pb.StreamPart(header=pb.StreamHeader(client_id=1)).SerializeToString()
                while True:
                    yield pb.StreamPart(data=b"x").SerializeToString()
                    await asyncio.sleep(0.05)

            call = chan.stream_unary(f"/{SERVICE}/Submit")
            with pytest.raises(aio.AioRpcError) as err:
                await call(trickle(), metadata=_metadata(TOKENS[1]))
            return err.value, server

    with caplog.at_level(logging.WARNING, logger=GUARD_LOG):
        err, server = asyncio.run(main())
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert server.refusals == {"deadline": 1}
    assert "call not done after 0.5 s" in caplog.text


def test_a_64_mib_message_is_refused_with_a_logged_reason(caplog):
    """Issue 11 defect 6: 64 MiB before authentication is refused from the metadata
    (never read); 64 MiB from an authenticated client is over gRPC's hard limit and
    the log says so, instead of nothing."""
    big = b"\0" * (64 << 20)

    async def main():
        server = CenterServer(_FakeCenter(), TokenTable(TOKENS), limits=ServerLimits())
        async with server, aio.insecure_channel(server.target) as chan:
            anonymous = await _raw_submit(chan, (big,), "not-a-token")
            known = await _raw_submit(chan, (big,), TOKENS[0])
            return anonymous, known, server

    with caplog.at_level(logging.WARNING, logger=GUARD_LOG):
        anonymous, known, server = asyncio.run(main())
    assert anonymous[0] is grpc.StatusCode.UNAUTHENTICATED
    assert known[0] is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.refusals == {"unauthenticated": 1, "truncated": 1}
    assert "(unauthenticated): unknown token" in caplog.text
    limit = 1024 + (64 << 10) + (4 << 20)
    assert f"over gRPC's limit of {limit} bytes" in caplog.text
    assert server.counter.received == 0


def test_garbage_in_a_mutual_tls_call_is_refused_with_a_logged_reason(pki, caplog):
    """Issue 11 defect 6: bytes that are no message, or a message out of order, inside
    an established mutual-TLS call are refused (INVALID_ARGUMENT) with a logged reason."""
    data_first = pb.StreamPart(data=b"abc").SerializeToString()

    async def main():
        server = CenterServer(_FakeCenter(), TokenTable(TOKENS), tls=pki.server, mutual=True)
        async with server:
            creds = channel_credentials(pki.client(0))
            async with aio.secure_channel(server.target, creds) as chan:
                garbage = await _raw_submit(chan, (b"\xff" * 100,), TOKENS[0])
                unordered = await _raw_submit(chan, (data_first,), TOKENS[0])
                hello = chan.unary_stream(f"/{SERVICE}/Session")
                with pytest.raises(aio.AioRpcError) as err:
                    async for _ in hello(b"\xff" * 10, metadata=_metadata(TOKENS[0])):
                        pass
            return garbage, unordered, err.value, server

    with caplog.at_level(logging.WARNING, logger=GUARD_LOG):
        garbage, unordered, session, server = asyncio.run(main())
    assert garbage[0] is unordered[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert session.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert server.refusals == {"malformed": 3}
    assert "Submit: 100 bytes are not a StreamPart message" in caplog.text
    assert "Submit: the first message is not a header" in caplog.text
    assert "Session: 10 bytes are not a Hello message" in caplog.text


class _BigChunks:
    """A client link whose uploads use chunks far over the center's message limit."""

    def __init__(self, link, token, size):
        self.link, self.size = link, size
        self.big = GrpcLink(link.target, link.client_id, token, chunks=ChunkPlan(128 << 10))

    def session(self):
        return self.link.session()

    async def download(self, round_idx):
        return await self.link.download(round_idx)

    async def reconnect(self):
        await self.link.reconnect()

    async def submit(self, round_idx, payload, num_examples, metrics):
        junk = Payload(CodecId.DENSE_F32, b"", np.zeros(self.size, np.float32).tobytes())
        self.big.run_id = self.link.run_id  # the run the session joined
        async with self.big:
            return await self.big.submit(round_idx, junk, num_examples, metrics)


def test_an_oversized_chunk_is_logged_as_oversized(small_deployment, federation, caplog):
    """Issue 11 defect 6: a chunk over the message limit is refused and logged naming the
    limit and its size, not as a transfer that "ended after 0 of N declared bytes"."""
    tokens = rthelpers.tokens_for(6)

    def wrap(cid, link):
        return _BigChunks(link, tokens[cid], 20_000)

    with caplog.at_level(logging.WARNING, logger=GUARD_LOG):
        result, _ = asyncio.run(
            federation(small_deployment, tokens=tokens, chunk_bytes=1024, wrap=wrap)
        )
    limit = 1024 + (64 << 10)
    assert f"Submit chunk: message of 80028 bytes over the limit of {limit} bytes" in caplog.text
    assert "ended after 0 of" not in caplog.text
    assert all(not r.outcome.accepted for r in result.rounds)


def test_refusal_log_rate_limits_each_kind_and_counts_everything(caplog):
    """Issue 11 defect 5: a flood cannot flood the log; each kind keeps its own burst."""
    now = [0.0]
    clock = SimpleNamespace(now=lambda: now[0])
    refusals = RefusalLog(ServerLimits(log_burst=2, log_window_s=10.0), clock=clock)
    unknown = Refused(grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", "unknown token")
    idle = Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "idle", "no message for 1 s")
    with caplog.at_level(logging.WARNING, logger=GUARD_LOG):
        for _ in range(50):
            refusals.note(unknown, "ipv4:10.0.0.1:1", "Submit")
        refusals.note(idle, "ipv4:10.0.0.2:1", "Session")
        now[0] = 11.0
        refusals.note(unknown, "ipv4:10.0.0.1:1", "Submit")
        refusals.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert refusals.counts == {"unauthenticated": 51, "idle": 1}
    assert (
        messages.count("refused Submit from ipv4:10.0.0.1:1 (unauthenticated): unknown token") == 3
    )
    assert (
        "refused 48 more calls (unauthenticated) in 11.0 s; 51 unauthenticated refusals in all"
        in messages
    )
    assert any("(idle): no message for 1 s" in m for m in messages)
    assert len(messages) == 6


def test_admission_and_limits_validate():
    """Issue 11 defect 5: the caps are checked at construction and released exactly."""
    with pytest.raises(ConfigError, match="max_calls_per_client"):
        ServerLimits(max_calls_per_client=0)
    with pytest.raises(ConfigError, match="idle_timeout_s"):
        ServerLimits(idle_timeout_s=0)
    admission = Admission(ServerLimits(max_calls_per_client=1), num_tokens=2)
    assert admission.total_cap == 70
    admission.admit(7)
    with pytest.raises(Refused, match="client 7 already holds 1 calls"):
        admission.admit(7)
    admission.release(7)
    admission.admit(7)
    assert admission.calls_of(7) == 1
    assert admission.held == 1
