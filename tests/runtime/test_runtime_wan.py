"""WAN emulation: a probe server in a network namespace behind a shaped, delayed link.

The namespace is joined to this one by a veth pair on a private /30 shaped by ``tbf``
(10 Mbit/s each way); :class:`DelayProxy` adds 25 ms each way in user space (this
kernel has no ``netem``). Real transfers must see both limits. Skipped where
namespaces or ``tc`` are not allowed (not root, no ``ip``/``tc``, refused by the kernel).
"""

import asyncio
import subprocess

import pytest

from fedstrata.errors import ConfigError, TransportError
from fedstrata.runtime.netem import DelayProxy, LinkShape, NamespaceLink, NamespaceLoop
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
