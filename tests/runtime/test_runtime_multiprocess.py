"""A real deployment on loopback: center, two edge tiers and 20 clients as OS processes.

TLS with client certificates (development PKI), int8 uplink compression. Mid-round 0,
one client of edge 0 and the whole of edge 1 are SIGKILLed (issue 11, defects 1 and
3): the center finishes every round with edge 0 and writes its run directory, and edge
1's clients give up after their retries with a clear message and a non-zero exit.
Processes are forked from a forkserver that preloaded torch and fedstrata, so each
starts in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rthelpers import free_port, wait_listening

from fedstrata.config import load_config
from fedstrata.errors import FedstrataError
from fedstrata.runtime import Backoff, TlsFiles, TokenTable, make_dev_pki, new_token

N_CLIENTS = 20
EDGES = [list(range(0, 10)), list(range(10, 20))]
VICTIM = 5  # of edge 0: killed after it downloaded the model of round 0
HOLDER = 15  # of edge 1: holds edge 1 in round 0 until edge 1 is killed
ROUNDS = 3
OVERRIDES = [
    "output.run_store=false",
    "sim.workers=0",
    f"data.num_clients={N_CLIENTS}",
    f"rounds.rounds={ROUNDS}",
    "rounds.deadline_s=40",
    "model.kind=logreg",
    "client.steps=2",
    "client.epochs=null",
    "compression.preset=int8",
]
RETRIES = Backoff(attempts=2, base_s=0.1, max_s=0.2)
CONNECT_S = 1.0
LIMIT_S = 120.0  # generous: 23 processes start on a loaded 2-core machine


def _center_main(port: int, tokens: dict[int, str], tls: TlsFiles, runs: str, out: Any) -> None:
    from fedstrata.runtime.commands import run_center

    config = load_config(overrides=[*OVERRIDES, "output.run_store=true", f"output.dir={runs}"])
    result = asyncio.run(
        run_center(
            config,
            address=f"127.0.0.1:{port}",
            tokens=TokenTable(tokens),
            tls=tls,
            mutual=True,
            participants=len(EDGES),
        )
    )
    accepted = [list(r.outcome.accepted) for r in result.rounds]
    finite = bool(np.isfinite(result.params).all())
    out.put(("center", accepted, finite, result.wire_bytes, str(result.run_dir)))


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


def _client_main(cid: int, port: int, token: str, tls: TlsFiles, *, stall: Any, out: Any) -> None:
    from fedstrata.runtime import GrpcLink, deployment

    async def main() -> None:
        dep = deployment(load_config(overrides=OVERRIDES))
        target = f"127.0.0.1:{port}"
        async with GrpcLink(target, cid, token, tls=tls, connect_timeout_s=CONNECT_S) as link:
            used = link if stall is None else _Stall(link, *stall)
            await dep.client(used, cid, backoff=RETRIES).run()  # type: ignore[arg-type]

    try:
        asyncio.run(main())
    except FedstrataError as exc:
        out.put(("client", cid, str(exc)))
        sys.exit(1)
    out.put(("client", cid, None))


class _Stall:
    """A stalling client's link: signals after its first download, then waits for
    ``release`` (None: forever, it is killed) before it goes on."""

    def __init__(self, link: Any, downloaded: Any, release: Any) -> None:
        self.link, self.downloaded, self.release = link, downloaded, release

    def session(self) -> Any:
        return self.link.session()

    async def download(self, round_idx: int) -> Any:
        payload = await self.link.download(round_idx)
        self.downloaded.set()
        if self.release is None:
            await asyncio.Event().wait()  # killed here
        await asyncio.to_thread(self.release.wait, LIMIT_S)
        return payload

    async def submit(self, *args: Any) -> Any:
        return await self.link.submit(*args)

    async def reconnect(self) -> None:
        await self.link.reconnect()


@pytest.mark.slow
def test_tiered_deployment_survives_a_killed_client_and_a_killed_edge(tmp_path, processes):
    """Issue 11 defects 1, 2 and 3, end to end over TLS in separate processes."""
    ctx, started = processes
    pki = make_dev_pki(Path(tmp_path), range(N_CLIENTS + len(EDGES)))
    tokens = {i: new_token() for i in range(N_CLIENTS + len(EDGES))}
    top, ports = free_port(), [free_port() for _ in EDGES]
    out = ctx.Queue()
    downloaded = {VICTIM: ctx.Event(), HOLDER: ctx.Event()}
    release = ctx.Event()

    def start(target: Any, *args: Any, **kwargs: Any) -> Any:
        p = ctx.Process(target=target, args=args, kwargs=kwargs, daemon=True)
        p.start()
        started.append(p)
        return p

    start(_center_main, top, tokens, pki.server, str(tmp_path / "runs"), out)
    edges = [start(_edge_main, k, (top, ports[k]), tokens, pki, out) for k in range(len(EDGES))]
    clients = {}
    for port in ports:
        wait_listening(port, LIMIT_S)
    for k, group in enumerate(EDGES):
        for cid in group:
            stall = {VICTIM: (downloaded[VICTIM], None), HOLDER: (downloaded[HOLDER], release)}
            args = (cid, ports[k], tokens[cid], pki.client(cid))
            clients[cid] = start(_client_main, *args, stall=stall.get(cid), out=out)
    for cid, event in downloaded.items():
        assert event.wait(LIMIT_S), f"client {cid} never downloaded the model"
    os.kill(clients[VICTIM].pid, signal.SIGKILL)  # mid-round 0, both
    os.kill(edges[1].pid, signal.SIGKILL)
    release.set()

    results = [out.get(timeout=LIMIT_S) for _ in range(2 + N_CLIENTS - 1)]
    _, accepted, finite, wire_bytes, run_dir = next(r for r in results if r[0] == "center")
    tier0, tier1 = N_CLIENTS, N_CLIENTS + 1
    assert accepted == [[tier0]] * ROUNDS  # edge 1 failed in round 0, gone afterwards
    assert finite
    assert wire_bytes > 0
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    assert (summary["status"], summary["rounds"]) == ("completed", ROUNDS)
    assert (Path(run_dir) / "model.npz").is_file()
    edge0 = next(r for r in results if r[:2] == ("edge", 0))
    assert [cid for cid, _ in edge0[2][0]] == [VICTIM]  # killed: failed round 0 at its edge
    assert not any(edge0[2][1:])  # and is simply gone afterwards
    said = {r[1]: r[2] for r in results if r[0] == "client"}
    assert all(said[cid] is None for cid in EDGES[0] if cid != VICTIM)
    for cid in EDGES[1]:
        assert "gave up after 2 reconnection attempts" in said[cid], said[cid]
        clients[cid].join(LIMIT_S)
        assert clients[cid].exitcode == 1
    assert tier1 not in {t for round_ in accepted for t in round_}
