"""WAN emulation: a probe server in a network namespace behind a shaped, delayed link.

The namespace is joined to this one by a veth pair on a private /30 shaped by ``tbf``
(10 Mbit/s each way); :class:`DelayProxy` adds 25 ms each way in user space (this
kernel has no ``netem``). Real transfers must see both limits. Skipped where
namespaces or ``tc`` are not allowed (not root, no ``ip``/``tc``, refused by the kernel).
"""

import asyncio
import multiprocessing as mp
import os
import signal
import subprocess

import pytest
from rthelpers import tokens_for

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.errors import ConfigError, TransportError
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, deployment
from fedstrata.runtime.netem import (
    DelayProxy,
    LinkShape,
    NamespaceLink,
    NamespaceLoop,
    enter_netns,
)
from fedstrata.runtime.probe import ProbeServer, probe_link

SHAPE = LinkShape(rate_mbit=10.0, delay_ms=25.0)
PAYLOAD_BYTES = 1 << 20  # 0.84 s at 10 Mbit/s


@pytest.fixture(scope="module")
def link():
    """The shaped namespace; always deleted (finally), even when a test fails."""
    ns = NamespaceLink(SHAPE)
    try:
        ns.__enter__()
    except TransportError as exc:
        pytest.skip(f"network namespaces / tc not usable here: {exc}")
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture(scope="module")
def probe_in_netns(link):
    """A probe server listening at the namespace's end of the link."""
    with NamespaceLoop(link.name) as nsloop:
        server = ProbeServer(link.ns_addr, 0)
        nsloop.call(server.__aenter__())
        try:
            yield server
        finally:
            nsloop.call(server.__aexit__(None, None, None))


def measure(host, port, delay_s=None):
    async def go():
        if delay_s is None:
            return await probe_link(f"{host}:{port}", payload_bytes=PAYLOAD_BYTES)
        async with DelayProxy(host, port, delay_s) as proxy:
            return await probe_link(f"127.0.0.1:{proxy.port}", payload_bytes=PAYLOAD_BYTES)

    return asyncio.run(go())


def test_rate_limit_and_added_delay_are_seen_by_real_transfers(link, probe_in_netns):
    port = probe_in_netns.port
    shaped = measure(link.ns_addr, port)
    wan = measure(link.ns_addr, port, delay_s=SHAPE.delay_ms / 1e3)
    # Bandwidth: tbf at 10 Mbit/s (generous lower bound: a shared, noisy machine).
    assert 5.0 < shaped.mbps < 11.0
    assert 4.0 < wan.mbps < 11.0
    # Latency: +25 ms each way, so the RTT grows by ~50 ms (never less: it is a floor).
    added_ms = wan.rtt_ms - shaped.rtt_ms
    assert 48.0 < added_ms < 150.0
    assert shaped.rtt_ms < 20.0


def _sh(*argv):
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def test_server_listens_inside_the_namespace_only(link, probe_in_netns):
    """The probe server's socket lives in the namespace, not in this one."""
    listen = f"{link.ns_addr}:{probe_in_netns.port}"
    inside = _sh("ip", "netns", "exec", link.name, "ss", "-Hltn")
    outside = _sh("ss", "-Hltn")
    assert listen in inside
    assert listen not in outside


def test_namespace_and_veth_are_removed_on_exit():
    try:
        with NamespaceLink(LinkShape(rate_mbit=1.0)) as ns:
            name, veth = ns.name, ns._veth_host
            assert name in _sh("ip", "netns")
    except TransportError as exc:
        pytest.skip(f"network namespaces / tc not usable here: {exc}")
    assert name not in _sh("ip", "netns")
    links = _sh("ip", "-o", "link")
    assert veth not in links


def test_delay_proxy_forwards_bytes_both_ways_in_order():
    """Over plain loopback (no namespace needed): an echo server behind the proxy."""

    async def echo(reader, writer):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def go():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        blob = bytes(range(256)) * 4096  # 1 MiB, position-dependent
        async with server, DelayProxy("127.0.0.1", port, 0.005) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(blob)
            writer.write_eof()
            got = await reader.read(-1)
            writer.close()
        return blob, got

    blob, got = asyncio.run(go())
    assert got == blob


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate_mbit": 0.0}, "LinkShape.rate_mbit must be > 0, got 0.0"),
        ({"delay_ms": -1.0}, "LinkShape.delay_ms must be >= 0, got -1.0"),
        ({"burst_bytes": 0}, "LinkShape.burst_bytes must be > 0, got 0"),
    ],
)
def test_bad_link_shapes_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LinkShape(**kwargs)


def test_negative_proxy_delay_is_a_config_error():
    with pytest.raises(ConfigError, match=r"delay_s must be >= 0, got -0\.1"):
        DelayProxy("127.0.0.1", 1, -0.1)


# ---- a real gRPC federation across the emulated WAN --------------------------------
# The center runs in a child process that entered the namespace (not a NamespaceLoop:
# gRPC core opens sockets on threads that inherit the namespace of whoever started
# them, which would pull this process's clients into the namespace too).

WAN_FED = [
    "output.run_store=false",
    "sim.workers=0",
    "data.num_clients=2",
    "rounds.rounds=2",
    "rounds.clients_per_round=null",
    "model.kind=mlp",
    "model.hidden=3328",  # 64*h + h + 10*h + 10 = 249,610 params: ~1 MB per transfer
    "client.steps=1",
    "client.epochs=null",
]
LIMIT_S = 60.0


def _center_in_netns(netns, address, tokens, out):
    """Child process: enter the namespace, serve the center, report its result."""
    enter_netns(netns)

    async def main():
        dep = deployment(load_config(overrides=WAN_FED))
        center = dep.center()
        async with CenterServer(center, TokenTable(tokens), address=f"{address}:0") as server:
            out.put(("port", server.port))
            result = await center.run(dep.initial_params())
        out.put(("result", result, server.counter.total))

    asyncio.run(main())


@pytest.fixture
def center_process(link):
    """``start(tokens) -> port``; the child is killed at the end whatever happened."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "fedstrata.runtime.commands", "fedstrata.torch_adapter"])
    out, started = ctx.Queue(), []

    def start(tokens):
        proc = ctx.Process(target=_center_in_netns, args=(link.name, link.ns_addr, tokens, out))
        proc.daemon = True
        proc.start()
        started.append(proc)
        tag, port = out.get(timeout=LIMIT_S)
        assert tag == "port"
        return port

    try:
        yield start, out
    finally:
        for proc in started:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(5)


async def _clients_through_the_proxy(dep, host, port, tokens):
    async with DelayProxy(host, port, SHAPE.delay_ms / 1e3) as proxy:

        async def client(cid):
            async with GrpcLink(f"127.0.0.1:{proxy.port}", cid, tokens[cid]) as gl:
                return await dep.client(gl, cid).run()

        async with asyncio.timeout(LIMIT_S), asyncio.TaskGroup() as tg:
            for cid in range(dep.num_clients):
                tg.create_task(client(cid))


def round_floor_s(record, clients, shape):
    """Least time a round can take on ``shape`` (a lower bound, in seconds).

    Each direction is a ``tbf`` at ``rate`` whose bucket (``burst`` bytes) may be full
    at the start (counted free); payload bytes understate what ``tbf`` charges (gRPC,
    HTTP/2, TCP/IP framing), so the bound holds. The task goes down (d), the download
    request up (d); the down link then carries every download before the last one
    completes (+d), after which that client's upload goes up (+d). Symmetrically the
    up link carries every upload after the first download completed.
    """
    rate = shape.rate_mbit * 1e6 / 8
    d = shape.delay_ms / 1e3
    down_one, up_one = record.bytes_down / clients, record.bytes_up / clients
    bytes_in_series = max(record.bytes_down + up_one, down_one + record.bytes_up)
    return 4 * d + (bytes_in_series - 2 * shape.burst_bytes) / rate


def test_grpc_federation_across_the_wan_sees_the_link_and_trains_the_same_model(
    link, center_process
):
    start, out = center_process
    cfg = load_config(overrides=WAN_FED)
    dep = deployment(cfg)
    tokens = tokens_for(dep.num_clients)
    port = start(tokens)
    asyncio.run(_clients_through_the_proxy(dep, link.ns_addr, port, tokens))
    tag, result, wire = out.get(timeout=LIMIT_S)
    assert tag == "result"
    sim = run(cfg).simulation
    assert not result.rejections
    assert [len(r.outcome.accepted) for r in result.rounds] == [2, 2]
    # Same seed, same model: the WAN changes the timing, never the bytes or the sum.
    assert result.params.tobytes() == sim.params.tobytes()
    for got, want in zip(result.rounds, sim.rounds, strict=True):
        assert (got.bytes_up, got.bytes_down) == (want.bytes_up, want.bytes_down)
    assert result.rounds[1].bytes_down >= 2 * dep.trainer.spec.nbytes > 1.9e6
    assert wire >= result.wire_bytes  # gRPC framing on top of the payloads
    # Round 1, close to close (its dispatch, transfers, training, folding), takes at
    # least what its bytes need at 10 Mbit/s plus the added delays.
    took = result.rounds[1].outcome.end_s - result.rounds[0].outcome.end_s
    floor = round_floor_s(result.rounds[1], 2, SHAPE)
    print(f"WAN round 1: {took:.3f} s >= floor {floor:.3f} s; gRPC bytes {wire}")
    assert floor > 2.0
    assert took >= floor
