"""Measure round-trip time and throughput between real hosts over TCP.

Every host runs a probe server (``fedstrata probe serve``). ``fedstrata probe latency
HOST:PORT …`` asks each server to measure its links to all the others, so the whole
matrix comes from where the traffic would really flow, and writes it in the format
the topology planner reads (:class:`~fedstrata.sim.network.LatencyMatrix`; one-way
latency = RTT / 2).

The protocol is line-based: ``PING`` → ``PONG``; ``SINK <n>`` + n bytes → ``OK``;
``PROBE <host:port>,…`` → one JSON line ``{target: {"rtt_ms", "mbps"}}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedstrata.errors import DeadlineError, ProtocolError, TransportError
from fedstrata.sim.network import LatencyMatrix

__all__ = ["LinkProbe", "ProbeServer", "probe_link", "probe_matrix"]

log = logging.getLogger(__name__)
MAX_SINK_BYTES = 256 << 20


@dataclass(frozen=True)
class LinkProbe:
    """Median round-trip time and throughput of one link."""

    rtt_ms: float
    mbps: float


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ProtocolError(f"probe target must be HOST:PORT, got {target!r}")
    return host.strip("[]"), int(port)


async def probe_link(
    target: str, *, pings: int = 5, payload_bytes: int = 1 << 20, timeout_s: float = 10.0
) -> LinkProbe:
    """Measure the link from here to the probe server at ``target``.

    Raises:
        TransportError: the server cannot be reached or broke the protocol.
        DeadlineError: the measurement took longer than ``timeout_s``.
    """
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(*_split(target))
            try:
                return await _measure(reader, writer, pings, payload_bytes)
            finally:
                writer.close()
    except TimeoutError:
        raise DeadlineError(f"probe of {target} took longer than {timeout_s} s") from None
    except OSError as exc:
        raise TransportError(f"probe of {target} failed: {exc}") from exc


async def _measure(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pings: int, size: int
) -> LinkProbe:
    rtts = []
    for _ in range(pings):
        start = time.perf_counter()
        writer.write(b"PING\n")
        await writer.drain()
        if await reader.readline() != b"PONG\n":
            raise TransportError("probe server answered PING wrongly")
        rtts.append(time.perf_counter() - start)
    start = time.perf_counter()
    writer.write(b"SINK %d\n" % size + bytes(size))
    await writer.drain()
    if await reader.readline() != b"OK\n":
        raise TransportError("probe server answered SINK wrongly")
    elapsed = time.perf_counter() - start
    return LinkProbe(1e3 * statistics.median(rtts), size * 8 / 1e6 / max(elapsed, 1e-9))


class ProbeServer:
    """The probe server; an async context manager owning its listening socket.

    Args:
        host: address to bind.
        port: port (0: any free port, see :attr:`port` after entering).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ProbeServer:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        assert self._server is not None
        await self._server.serve_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                await self._answer(line.strip().decode("ascii", "replace"), reader, writer)
        except (ProtocolError, ValueError, asyncio.IncompleteReadError) as exc:
            log.warning("probe client %s: %s", writer.get_extra_info("peername"), exc)
        finally:
            writer.close()

    async def _answer(
        self, line: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        verb, _, arg = line.partition(" ")
        if verb == "PING":
            writer.write(b"PONG\n")
        elif verb == "SINK" and arg.isdigit() and int(arg) <= MAX_SINK_BYTES:
            await reader.readexactly(int(arg))
            writer.write(b"OK\n")
        elif verb == "PROBE":
            targets = [t for t in arg.split(",") if t]
            found = {t: (await probe_link(t)).__dict__ for t in targets}
            writer.write(json.dumps(found).encode() + b"\n")
        else:
            raise ProtocolError(f"unknown probe request {line[:40]!r}")
        await writer.drain()


async def _ask(host: str, others: Sequence[str], timeout_s: float) -> dict[str, dict[str, float]]:
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(*_split(host))
            writer.write(b"PROBE " + ",".join(others).encode() + b"\n")
            await writer.drain()
            answer = await reader.readline()
            writer.close()
    except TimeoutError:
        raise DeadlineError(f"probe server {host} did not answer in {timeout_s} s") from None
    except OSError as exc:
        raise TransportError(f"probe server {host} is unreachable: {exc}") from exc
    try:
        found: dict[str, dict[str, float]] = json.loads(answer)
    except ValueError:
        raise TransportError(f"probe server {host} sent a malformed answer") from None
    return found


async def probe_matrix(
    hosts: Sequence[str], names: Sequence[str] | None = None, *, timeout_s: float = 60.0
) -> tuple[LatencyMatrix, np.ndarray]:
    """Latency (one-way ms) and throughput (Mb/s) between every pair of ``hosts``.

    Raises:
        ProtocolError: ``names`` does not match ``hosts``.
        TransportError: a host is unreachable.
    """
    ids = tuple(names or hosts)
    if len(ids) != len(hosts):
        raise ProtocolError(f"{len(ids)} names for {len(hosts)} hosts")
    n = len(hosts)
    latency, mbps = np.zeros((n, n)), np.zeros((n, n))
    for i, host in enumerate(hosts):
        found = await _ask(host, [h for h in hosts if h != host], timeout_s)
        for j, other in enumerate(hosts):
            if other in found:
                latency[i, j] = found[other]["rtt_ms"] / 2
                mbps[i, j] = found[other]["mbps"]
    return LatencyMatrix(ids, latency), mbps
