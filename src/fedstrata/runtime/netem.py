"""Emulate a WAN link on one Linux host: a network namespace, a rate limit, a delay.

For tests and experiments of the runtime over slow links without other machines.

* :class:`NamespaceLink` creates a network namespace joined to this one by a veth
  pair on a private /30 (``10.200.x.y``) and shapes both directions with a ``tbf``
  token bucket (bandwidth). It owns the namespace and deletes it on exit (which also
  removes the veth pair).
* :class:`NamespaceLoop` runs an asyncio event loop on a thread that has entered the
  namespace, so servers started there listen inside it.
* :class:`DelayProxy` is a userspace TCP proxy that holds every chunk for a fixed
  delay in each direction (latency): this kernel has no ``netem`` qdisc. It preserves
  byte order and back-pressure; it emulates neither loss nor reordering.

Everything needs root (``CAP_NET_ADMIN``) and the ``ip`` and ``tc`` tools; the
constructors raise :class:`~fedstrata.errors.TransportError` where they are missing,
so callers can skip. Traffic stays on addresses this module creates.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ipaddress
import logging
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from fedstrata.errors import ConfigError, TransportError

__all__ = ["DelayProxy", "LinkShape", "NamespaceLink", "NamespaceLoop", "enter_netns"]

log = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
SUBNET_POOL = ipaddress.IPv4Network("10.200.0.0/16")
CHUNK_BYTES = 64 << 10
T = TypeVar("T")


@dataclass(frozen=True)
class LinkShape:
    """How a link is shaped: rate each direction (tbf) and added one-way delay.

    Raises:
        ConfigError: a value is not positive (delay: not negative).
    """

    rate_mbit: float = 10.0
    delay_ms: float = 25.0
    burst_bytes: int = 32 << 10
    queue_ms: float = 200.0

    def __post_init__(self) -> None:
        for name in ("rate_mbit", "burst_bytes", "queue_ms"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"LinkShape.{name} must be > 0, got {getattr(self, name)}")
        if not self.delay_ms >= 0:
            raise ConfigError(f"LinkShape.delay_ms must be >= 0, got {self.delay_ms}")


def _cmd(*args: str, netns: str | None = None) -> None:
    argv = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise TransportError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.returncode}")


def _free_subnet() -> ipaddress.IPv4Network:
    """A random /30 of 10.200.0.0/16 with no address of this namespace in it."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False)
    subnets = list(SUBNET_POOL.subnets(new_prefix=30))
    for _ in range(64):
        net = subnets[secrets.randbelow(len(subnets))]
        if not any(str(host) in used.stdout for host in net):
            return net
    raise TransportError("no free /30 left in 10.200.0.0/16")


class NamespaceLink:
    """A network namespace joined to this one by a shaped veth pair.

    Args:
        shape: the rate limit (``delay_ms`` is :class:`DelayProxy`'s business).
        name: namespace name (default: a random ``fsnet-…``).

    Attributes:
        host_addr: this namespace's end of the /30.
        ns_addr: the namespace's end (servers inside listen here).

    Raises:
        TransportError: not root, ``ip``/``tc`` missing, or the kernel refused a step.
    """

    def __init__(self, shape: LinkShape, name: str | None = None) -> None:
        self.shape = shape
        tag = secrets.token_hex(3)
        self.name = name or f"fsnet-{tag}"
        self._veth_host, self._veth_ns = f"fsh{tag}", f"fsn{tag}"
        self._created = False
        self.host_addr = self.ns_addr = ""

    def __enter__(self) -> NamespaceLink:
        if os.geteuid() != 0:
            raise TransportError("network namespaces need root (CAP_NET_ADMIN)")
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                raise TransportError(f"the {tool!r} tool is not installed")
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        net = _free_subnet()
        host, ns = (str(h) for h in net.hosts())
        _cmd("ip", "netns", "add", self.name)
        self._created = True
        _cmd("ip", "link", "add", self._veth_host, "type", "veth", "peer", "name", self._veth_ns)
        _cmd("ip", "link", "set", self._veth_ns, "netns", self.name)
        _cmd("ip", "addr", "add", f"{host}/30", "dev", self._veth_host)
        _cmd("ip", "link", "set", self._veth_host, "up")
        _cmd("ip", "addr", "add", f"{ns}/30", "dev", self._veth_ns, netns=self.name)
        _cmd("ip", "link", "set", self._veth_ns, "up", netns=self.name)
        _cmd("ip", "link", "set", "lo", "up", netns=self.name)
        self._shape(self._veth_host, None)
        self._shape(self._veth_ns, self.name)
        self.host_addr, self.ns_addr = host, ns
        log.info("netns %s: %s <-> %s at %.1f Mbit/s", self.name, host, ns, self.shape.rate_mbit)

    def _shape(self, dev: str, netns: str | None) -> None:
        s = self.shape
        rate, burst, queue = f"{s.rate_mbit * 1000:.0f}kbit", str(s.burst_bytes), f"{s.queue_ms}ms"
        tbf = ("rate", rate, "burst", burst, "latency", queue)
        _cmd("tc", "qdisc", "add", "dev", dev, "root", "tbf", *tbf, netns=netns)

    def close(self) -> None:
        """Delete the namespace (and with it the veth pair and its qdiscs)."""
        if self._created:
            with contextlib.suppress(TransportError):
                _cmd("ip", "link", "del", self._veth_host)
            _cmd("ip", "netns", "del", self.name)
            self._created = False

    def __exit__(self, *exc: object) -> None:
        self.close()


def enter_netns(name: str) -> None:
    """Move the calling thread (only) into network namespace ``name``.

    Threads it starts afterwards inherit the namespace. Call it first thing in a
    child process (e.g. a multiprocessing target) to run a whole process inside.

    Raises:
        TransportError: the kernel refused ``setns``.
        OSError: the namespace does not exist.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise TransportError(f"setns({name}) failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


class NamespaceLoop:
    """An asyncio loop on a thread inside namespace ``name``; a context manager.

    Sockets opened by coroutines run with :meth:`call` live in the namespace. Exiting
    stops the loop and joins the thread; coroutines still running are cancelled.
    Not for gRPC: its core opens sockets on its own threads, and those inherit the
    namespace of the thread that first started them, so a gRPC server here would drag
    the process's gRPC clients into the namespace. Run a gRPC server in a child
    process that called :func:`enter_netns` instead.

    Raises:
        TransportError: the thread cannot enter the namespace.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=f"netns-{name}", daemon=True)
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()

    def _main(self) -> None:
        try:
            enter_netns(self.name)
        except (OSError, TransportError) as exc:
            self._started.set_exception(TransportError(f"cannot enter netns {self.name}: {exc}"))
            return
        asyncio.set_event_loop(self.loop)
        self._started.set_result(None)
        self.loop.run_forever()
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def __enter__(self) -> NamespaceLoop:
        self._thread.start()
        self._started.result(timeout=10)
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run ``coro`` on the namespace's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` run on the namespace's loop from another event loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


class DelayProxy:
    """A TCP proxy adding ``delay_s`` to each direction; an async context manager.

    Listens on ``listen_host`` (default loopback, port 0: see :attr:`port`) and
    forwards every connection to ``target``. Each chunk read is written out
    ``delay_s`` after it arrived; at most ``queue_chunks`` chunks wait per direction,
    so a slow far side pushes back on the sender as on a real link.

    Raises:
        ConfigError: ``delay_s`` is negative.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        delay_s: float,
        *,
        listen_host: str = "127.0.0.1",
        queue_chunks: int = 64,
    ) -> None:
        if not delay_s >= 0:
            raise ConfigError(f"DelayProxy delay_s must be >= 0, got {delay_s}")
        self.target, self.delay_s = (target_host, target_port), delay_s
        self.host, self.port, self.queue_chunks = listen_host, 0, queue_chunks
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            far_reader, far_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.warning("delay proxy cannot reach %s:%d: %s", *self.target, exc)
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await self._both_ways(reader, writer, far_reader, far_writer)
        except asyncio.CancelledError:  # the proxy is closing: end quietly (3.11's
            pass  # streams log a cancelled connection handler as an error)
        finally:
            writer.close()
            far_writer.close()
            self._tasks.discard(task)

    async def _both_ways(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        far_reader: asyncio.StreamReader,
        far_writer: asyncio.StreamWriter,
    ) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(reader, far_writer))
                tg.create_task(self._pipe(far_reader, writer))
        except* (OSError, asyncio.IncompleteReadError):
            log.debug("delay proxy connection ended", exc_info=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk held until ``delay_s`` after its arrival."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(self.queue_chunks)

        async def pump() -> None:
            while data := await reader.read(CHUNK_BYTES):
                await queue.put((loop.time() + self.delay_s, data))
            await queue.put((loop.time() + self.delay_s, b""))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(pump())
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
