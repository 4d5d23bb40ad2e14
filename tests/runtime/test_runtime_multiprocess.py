"""A real deployment on loopback: center, two edge tiers and 20 clients as OS processes.

TLS with client certificates (development PKI), int8 uplink compression, and one
client SIGKILLed after it downloaded the model of round 0. Processes are forked from
a forkserver that preloaded torch and fedstrata, so each starts in milliseconds.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedstrata.config import load_config
from fedstrata.runtime import TlsFiles, TokenTable, make_dev_pki, new_token

N_CLIENTS = 20
EDGES = [list(range(0, 10)), list(range(10, 20))]
VICTIM = 5
OVERRIDES = [
    "output.run_store=false",
    "sim.workers=0",
    f"data.num_clients={N_CLIENTS}",
    "rounds.rounds=2",
    "rounds.deadline_s=40",
    "model.kind=logreg",
    "client.steps=2",
    "client.epochs=null",
    "compression.preset=int8",
]
LIMIT_S = 50.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _center_main(port: int, tokens: dict[int, str], tls: TlsFiles, out: Any) -> None:
    from fedstrata.runtime.commands import run_center

    result = asyncio.run(
        run_center(
            load_config(overrides=OVERRIDES),
            address=f"127.0.0.1:{port}",
            tokens=TokenTable(tokens),
            tls=tls,
            mutual=True,
            participants=len(EDGES),
        )
    )
    accepted = [len(r.outcome.accepted) for r in result.rounds]
    out.put(("center", accepted, bool(np.isfinite(result.params).all()), result.wire_bytes))


def _edge_main(k: int, ports: tuple[int, int], tokens: dict[int, str], pki: Any, out: Any) -> None:
    parent, port = ports
    from fedstrata.runtime.commands import run_aggregator

    tier_id = N_CLIENTS + k
    report = asyncio.run(
        run_aggregator(
            load_config(overrides=OVERRIDES),
            parent=f"127.0.0.1:{parent}",
            tier_id=tier_id,
            token=tokens[tier_id],
            parent_tls=pki.client(tier_id),
            clients=len(EDGES[k]),
            address=f"127.0.0.1:{port}",
            tokens=TokenTable(tokens),
            tls=pki.server,
            mutual=True,
        )
    )
    out.put(("edge", k, [r.outcome.failed for r in report.rounds]))


def _client_main(cid: int, port: int, token: str, tls: TlsFiles, downloaded: Any) -> None:
    from fedstrata.runtime import GrpcLink, deployment

    async def main() -> None:
        dep = deployment(load_config(overrides=OVERRIDES))
        async with GrpcLink(f"127.0.0.1:{port}", cid, token, tls=tls) as link:
            agent = dep.client(link if downloaded is None else _Stall(link, downloaded), cid)
            await agent.run()  # type: ignore[arg-type]

    asyncio.run(main())


class _Stall:
    """The victim's link: signals after its first download, then never submits."""

    def __init__(self, link: Any, downloaded: Any) -> None:
        self.link, self.downloaded = link, downloaded

    def session(self) -> Any:
        return self.link.session()

    async def download(self, round_idx: int) -> Any:
        payload = await self.link.download(round_idx)
        self.downloaded.set()
        await asyncio.Event().wait()  # killed here
        return payload


@pytest.fixture
def processes():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "fedstrata.runtime.commands", "fedstrata.torch_adapter"])
    started: list[Any] = []
    yield ctx, started
    for p in started:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join(5)


@pytest.mark.slow
def test_center_two_edges_twenty_clients_tls_int8_with_a_killed_client(tmp_path, processes):
    ctx, started = processes
    pki = make_dev_pki(Path(tmp_path), range(N_CLIENTS + len(EDGES)))
    tokens = {i: new_token() for i in range(N_CLIENTS + len(EDGES))}
    top, ports = _free_port(), [_free_port() for _ in EDGES]
    out, downloaded = ctx.Queue(), ctx.Event()

    def start(target: Any, *args: Any) -> Any:
        p = ctx.Process(target=target, args=args, daemon=True)
        p.start()
        started.append(p)
        return p

    start(_center_main, top, tokens, pki.server, out)
    for k in range(len(EDGES)):
        start(_edge_main, k, (top, ports[k]), tokens, pki, out)
    victim = None
    for k, group in enumerate(EDGES):
        for cid in group:
            signal_ = downloaded if cid == VICTIM else None
            p = start(_client_main, cid, ports[k], tokens[cid], pki.client(cid), signal_)
            victim = p if cid == VICTIM else victim
    assert victim is not None
    assert downloaded.wait(LIMIT_S), "the victim never downloaded the model"
    os.kill(victim.pid, signal.SIGKILL)

    results = [out.get(timeout=LIMIT_S) for _ in range(1 + len(EDGES))]
    center = next(r for r in results if r[0] == "center")
    _, accepted, finite, wire_bytes = center
    assert accepted == [2, 2]  # both edges merged in both rounds
    assert finite
    assert wire_bytes > 0
    edge0 = next(r for r in results if r[:2] == ("edge", 0))
    assert [cid for cid, _ in edge0[2][0]] == [VICTIM]  # killed: failed round 0 at its edge
    assert not any(edge0[2][1:])  # and is simply gone afterwards
