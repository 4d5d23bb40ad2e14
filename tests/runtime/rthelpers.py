"""Helpers of the runtime tests: a small deterministic federation over loopback.

A module of its own (not ``conftest``) so test files import it by a unique name."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

from fedstrata.runtime import (
    CenterServer,
    ClientReport,
    Deployment,
    DevPki,
    GrpcLink,
    RuntimeResult,
    TokenTable,
    new_token,
)

SMALL = [
    "output.run_store=false",
    "sim.workers=0",
    "data.num_clients=6",
    "rounds.rounds=2",
    "rounds.clients_per_round=5",
    "model.kind=logreg",
    "client.steps=3",
    "client.epochs=null",
]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, limit_s: float) -> None:
    """Poll until something accepts connections on ``port``, at most ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def tokens_for(n: int) -> dict[int, str]:
    return {cid: new_token() for cid in range(n)}


async def run_federation(
    dep: Deployment,
    *,
    tokens: Mapping[int, str] | None = None,
    pki: DevPki | None = None,
    mutual: bool = False,
    chunk_bytes: int = 1 << 20,
    wrap: Callable[[int, GrpcLink], object] | None = None,
    intruder: Callable[[str], Awaitable[None]] | None = None,
    min_available: int | None = None,
    dies: type[BaseException] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    stream_min_bytes: int | None = 64 << 20,
) -> tuple[RuntimeResult, list[ClientReport]]:
    """Center + every client of ``dep`` as asyncio tasks over loopback (port 0)."""
    n = dep.num_clients
    tokens = dict(tokens or tokens_for(n))
    center = dep.center(
        chunk_bytes=chunk_bytes, min_available=min_available, stream_min_bytes=stream_min_bytes
    )
    tls = None if pki is None else pki.server
    async with CenterServer(center, TokenTable(tokens), tls=tls, mutual=mutual) as server:

        async def one(cid: int) -> ClientReport:
            ctls = None if pki is None else pki.client(cid, mutual=mutual)
            async with GrpcLink(
                server.target, cid, tokens[cid], tls=ctls, chunks=center.settings.chunks
            ) as link:
                used = link if wrap is None else wrap(cid, link)
                try:
                    kw = {} if sleep is None else {"sleep": sleep}
                    return await dep.client(used, cid, **kw).run()  # type: ignore[arg-type]
                except Exception as exc:
                    if dies is None or not isinstance(exc, dies):
                        raise
                    return ClientReport()  # the process "died": its channel closes

        async with asyncio.TaskGroup() as tg:
            main = tg.create_task(center.run(dep.initial_params()))
            clients = [tg.create_task(one(cid)) for cid in range(n)]
            if intruder is not None:
                tg.create_task(intruder(server.target))
    return main.result(), [c.result() for c in clients]
