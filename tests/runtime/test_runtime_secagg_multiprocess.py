"""Issue 13 part 4: a secure, private deployment as OS processes on loopback.

A center, 4 edge aggregators and 16 clients (4 per edge; the clients of an edge share
one process, one client has a process of its own), mutual TLS, two-tier secure
aggregation and distributed DP (ε = 2). In round 0 the lone client's process and
edge 1's process are SIGKILLed: the client is a protocol dropout at edge 0, edge 1 an
outer dropout at the center; every round completes with the 11 surviving clients,
the run directory records ε, and edge 1's clients give up with a clear message.
Processes are forked from a forkserver that preloaded torch and fedstrata.
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
from rthelpers import free_port, wait_listening

from fedstrata.config import load_config
from fedstrata.errors import FedstrataError
from fedstrata.runtime import Backoff, TlsFiles, TokenTable, make_dev_pki, new_token

N_CLIENTS = 16
EDGES = [list(range(4 * k, 4 * k + 4)) for k in range(4)]
VICTIM = 1  # of edge 0, in a process of its own: killed after its download of round 0
HOLDER = 5  # of edge 1: holds edge 1 in round 0 until edge 1 is killed
ROUNDS = 3
OVERRIDES = [
    "output.run_store=false",
    "sim.workers=0",
    f"data.num_clients={N_CLIENTS}",
    f"rounds.rounds={ROUNDS}",
    "rounds.clients_per_round=null",
    "rounds.deadline_s=40",
    "model.kind=logreg",
    "client.steps=2",
    "client.epochs=null",
    "secagg.enabled=true",
    "secagg.dropout_rate=0.4",
    "privacy.mechanism=distributed",
    "privacy.epsilon=2",
]
RETRIES = Backoff(attempts=2, base_s=0.1, max_s=0.2)
CONNECT_S = 1.0
LIMIT_S = 120.0  # generous: 10 processes start on a loaded 2-core machine


def _center_main(port: int, tokens: dict[int, str], tls: TlsFiles, runs: str, out: Any) -> None:
    from fedstrata.runtime.commands import run_center

    config = load_config(overrides=[*OVERRIDES, "output.run_store=true", f"output.dir={runs}"])
    result = asyncio.run(
        run_center(
            config, address=f"127.0.0.1:{port}", tokens=TokenTable(tokens), tls=tls,
            mutual=True, participants=len(EDGES),
        )
    )  # fmt: skip
    accepted = [sorted(r.outcome.accepted) for r in result.rounds]
    eps = [r.privacy.epsilon_spent if r.privacy else None for r in result.rounds]
    finite = bool(np.isfinite(result.params).all())
    out.put(("center", accepted, eps, finite, str(result.run_dir)))


def _edge_main(k: int, ports: tuple[int, int], tokens: dict[int, str], pki: Any, out: Any) -> None:
    parent, port = ports
    from fedstrata.runtime.commands import run_aggregator

    tier_id = N_CLIENTS + k
    report = asyncio.run(
        run_aggregator(
            load_config(overrides=OVERRIDES), parent=f"127.0.0.1:{parent}", tier_id=tier_id,
            token=tokens[tier_id], parent_tls=pki.client(tier_id), clients=len(EDGES[k]),
            address=f"127.0.0.1:{port}", tokens=TokenTable(tokens), tls=pki.server, mutual=True,
        )
    )  # fmt: skip
    out.put(("edge", k, [sorted(c for c, _ in r.outcome.failed) for r in report.rounds]))


def _clients_main(cids: list[int], port: int, tokens: dict[int, str], pki: Any, **kw: Any) -> None:
    """Some clients of one edge as asyncio tasks of one process."""
    from fedstrata.runtime import GrpcLink, deployment

    stall, out = kw["stall"], kw["out"]

    async def one(dep: Any, cid: int) -> str | None:
        target, tls = f"127.0.0.1:{port}", pki.client(cid)
        try:
            async with GrpcLink(
                target, cid, tokens[cid], tls=tls, connect_timeout_s=CONNECT_S
            ) as link:
                used = link if cid not in stall else _Stall(link, *stall[cid])
                await dep.client(used, cid, backoff=RETRIES).run()  # type: ignore[arg-type]
        except FedstrataError as exc:
            return str(exc)
        return None

    async def main() -> list[str | None]:
        dep = deployment(load_config(overrides=OVERRIDES))
        return list(await asyncio.gather(*(one(dep, cid) for cid in cids)))

    said = asyncio.run(main())
    for cid, why in zip(cids, said, strict=True):
        out.put(("client", cid, why))
    sys.exit(1 if any(said) else 0)


class _Stall:
    """Signals after its first download, then waits for ``release`` (None: forever,
    the process is killed) before it goes on."""

    def __init__(self, link: Any, downloaded: Any, release: Any) -> None:
        self.link, self.downloaded, self.release = link, downloaded, release

    def __getattr__(self, name: str) -> Any:
        return getattr(self.link, name)

    async def download(self, round_idx: int) -> Any:
        payload = await self.link.download(round_idx)
        if round_idx == 0:
            self.downloaded.set()
            if self.release is None:
                await asyncio.Event().wait()  # killed here
            await asyncio.to_thread(self.release.wait, LIMIT_S)
        return payload


def test_secure_private_deployment_survives_a_killed_client_and_a_killed_edge(tmp_path, processes):
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
    for port in ports:
        wait_listening(port, LIMIT_S)
    stall = {VICTIM: (downloaded[VICTIM], None), HOLDER: (downloaded[HOLDER], release)}
    groups = [[VICTIM], *([c for c in g if c != VICTIM] for g in EDGES)]
    homes = [0, 0, 1, 2, 3]
    procs = [
        start(_clients_main, g, ports[k], tokens, pki, stall=stall, out=out)
        for g, k in zip(groups, homes, strict=True)
    ]
    for cid, event in downloaded.items():
        assert event.wait(LIMIT_S), f"client {cid} never downloaded the model"
    os.kill(procs[0].pid, signal.SIGKILL)  # the lone client, mid-round 0
    os.kill(edges[1].pid, signal.SIGKILL)  # edge 1, mid-round 0
    release.set()

    results = [out.get(timeout=LIMIT_S) for _ in range(1 + 3 + N_CLIENTS - 1)]
    _, accepted, eps, finite, run_dir = next(r for r in results if r[0] == "center")
    tiers = [N_CLIENTS + k for k in (0, 2, 3)]
    assert accepted == [tiers] * ROUNDS  # edge 1 failed in round 0, gone afterwards
    assert finite
    assert all(e is not None for e in eps)
    assert 0 < eps[0] < eps[-1] <= 2.0
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    assert (summary["status"], summary["rounds"]) == ("completed", ROUNDS)
    edge0 = next(r for r in results if r[:2] == ("edge", 0))
    assert edge0[2][0] == [VICTIM]  # a protocol dropout at its edge in round 0
    assert not any(edge0[2][1:])
    said = {r[1]: r[2] for r in results if r[0] == "client"}
    assert all(said[cid] is None for g in (0, 2, 3) for cid in EDGES[g] if cid != VICTIM)
    for cid in EDGES[1]:
        assert "gave up after 2 reconnection attempts" in said[cid], said[cid]
