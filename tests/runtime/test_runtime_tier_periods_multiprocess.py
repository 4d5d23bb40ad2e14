"""An explicit tree deployed as OS processes (what ``fedstrata center`` and ``fedstrata
serve aggregator`` run): a center, two edge aggregators that name themselves from the
clients that connect, and six clients, over loopback without TLS; HierFAVG with
``kappa_edge: 2`` and 4 of 6 clients sampled below the edges. The model equals the
simulator's bit for bit."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from rthelpers import free_port, wait_listening

from fedstrata.config import load_config
from fedstrata.runtime import TokenTable, new_token

EDGES = {"e0": [0, 1, 2], "e1": [3, 4, 5]}
N = 6
OVERRIDES = [
    "output.run_store=false",
    "sim.workers=0",
    f"data.num_clients={N}",
    "rounds.rounds=2",
    "rounds.clients_per_round=4",
    "model.kind=logreg",
    "client.steps=3",
    "client.epochs=null",
    "topology.mode=explicit",
    f"topology.edges={EDGES}",
    "topology.kappa_edge=2",
]
LIMIT_S = 120.0


def _center_main(port: int, tokens: dict[int, str], out: Any) -> None:
    from fedstrata.runtime.commands import run_center

    result = asyncio.run(
        run_center(
            load_config(overrides=OVERRIDES), address=f"127.0.0.1:{port}",
            tokens=TokenTable(tokens), tls=None, mutual=False, participants=len(EDGES),
        )
    )  # fmt: skip
    out.put(("center", result.params.tobytes(), len(result.rounds)))


def _edge_main(k: int, ports: tuple[int, int], tokens: dict[int, str], out: Any) -> None:
    from fedstrata.runtime.commands import run_aggregator

    parent, port = ports
    tier_id = N + k
    report = asyncio.run(
        run_aggregator(
            load_config(overrides=OVERRIDES), parent=f"127.0.0.1:{parent}", tier_id=tier_id,
            token=tokens[tier_id], parent_tls=None, clients=3, address=f"127.0.0.1:{port}",
            tokens=TokenTable(tokens), tls=None, mutual=False,
        )
    )  # fmt: skip
    out.put(("edge", k, [sorted(r.outcome.accepted) for r in report.rounds]))


def _client_main(cid: int, port: int, token: str, out: Any) -> None:
    from fedstrata.runtime import GrpcLink, deployment

    async def main() -> None:
        dep = deployment(load_config(overrides=OVERRIDES))
        async with GrpcLink(f"127.0.0.1:{port}", cid, token) as link:
            await dep.client(link, cid).run()

    asyncio.run(main())
    out.put(("client", cid))


@pytest.mark.slow
def test_an_explicit_tree_of_processes_equals_the_simulator(processes):
    from fedstrata.api import run

    ctx, started = processes
    tokens = {i: new_token() for i in range(N + len(EDGES))}
    top, ports = free_port(), [free_port() for _ in EDGES]
    out = ctx.Queue()

    def start(target: Any, *args: Any) -> None:
        p = ctx.Process(target=target, args=args, daemon=True)
        p.start()
        started.append(p)

    start(_center_main, top, tokens, out)
    for k in range(len(EDGES)):
        start(_edge_main, k, (top, ports[k]), tokens, out)
    for k, group in enumerate(EDGES.values()):
        wait_listening(ports[k], LIMIT_S)
        for cid in group:
            start(_client_main, cid, ports[k], tokens[cid], out)
    results = [out.get(timeout=LIMIT_S) for _ in range(1 + len(EDGES) + N)]
    _, params, rounds = next(r for r in results if r[0] == "center")
    sim = run(load_config(overrides=OVERRIDES)).simulation
    assert rounds == 2
    assert params == sim.params.tobytes()
    edges = {r[1]: r[2] for r in results if r[0] == "edge"}
    assert all(len(trained) == 2 * 2 for trained in edges.values())  # kappa_edge rounds
    trained = {c for rounds_ in edges.values() for r in rounds_[:2] for c in r}
    assert len(trained) == 4  # the cohort of global round 0, across both edges
    assert np.frombuffer(params, np.float32).size == sim.params.size
