"""Tiers as in the simulator: a deployed HierFAVG tree against the simulator's run.

A center, one edge aggregator per edge of ``topology.edges`` and every client run as
asyncio tasks of one process, talking gRPC over loopback (each party its own
``CenterServer`` or ``GrpcLink``; no shared state but the configuration). The edges
run ``kappa_edge`` edge rounds per center round over their share of the cohort
(``rounds.clients_per_round`` drawn once for the tree), uplink int8 compression and
int8 re-compressed partials between the tiers. The same configuration runs in the
simulator's tree driver; the models are compared bit for bit.

| mode    | edges | clients | kappa_edge | rounds |
|---------|-------|---------|------------|--------|
| quick   | 2     | 8       | 2          | 3      |
| full    | 4     | 24      | 3          | 5      |

Usage: ``python bench/runtime_tiers.py [--quick]``; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any


def _overrides(edges: int, clients: int, kappa: int, rounds: int) -> list[str]:
    per = clients // edges
    tree = {f"e{k}": list(range(k * per, (k + 1) * per)) for k in range(edges)}
    return [
        "output.run_store=false",
        "sim.workers=0",
        f"data.num_clients={clients}",
        f"rounds.rounds={rounds}",
        f"rounds.clients_per_round={max(1, 3 * clients // 4)}",
        "model.kind=logreg",
        "client.steps=3",
        "client.epochs=null",
        "compression.preset=int8",
        "topology.mode=explicit",
        f"topology.edges={json.dumps(tree)}",
        f"topology.kappa_edge={kappa}",
        "topology.partial_compression.preset=int8",
    ]


async def _deploy(dep: Any, edges: dict[str, list[int]]) -> tuple[Any, dict[str, Any]]:
    """Center <- one tier per edge <- its clients, all over loopback gRPC."""
    from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, new_token

    n, names = dep.num_clients, list(edges)
    tier_ids = {name: n + k for k, name in enumerate(names)}
    table = TokenTable(tokens := {i: new_token() for i in range(n + len(names))})
    center = dep.center(participants=len(names))
    centers = {name: dep.edge(len(edges[name])) for name in names}
    reports: dict[str, Any] = {}
    async with CenterServer(center, table) as top:
        servers = [CenterServer(c, table) for c in centers.values()]
        targets = {}
        for name, s in zip(names, servers, strict=True):
            await s.__aenter__()
            targets[name] = s.target
        try:

            async def tier(name: str) -> None:
                async with GrpcLink(top.target, tier_ids[name], tokens[tier_ids[name]]) as link:
                    agg = dep.tier(link, centers[name], tier_id=tier_ids[name])
                    reports[name] = await agg.run()

            async def client(cid: int, name: str) -> None:
                async with GrpcLink(targets[name], cid, tokens[cid]) as link:
                    await dep.client(link, cid).run()

            async with asyncio.TaskGroup() as tg:
                main = tg.create_task(center.run(dep.initial_params()))
                for name in names:
                    tg.create_task(tier(name))
                    for cid in edges[name]:
                        tg.create_task(client(cid, name))
        finally:
            for s in servers:
                await s.__aexit__(None, None, None)
    return main.result(), reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    edges, clients, kappa, rounds = (2, 8, 2, 3) if args.quick else (4, 24, 3, 5)

    import numpy as np

    from fedstrata.api import run
    from fedstrata.config import load_config
    from fedstrata.runtime import deployment

    cfg = load_config(overrides=_overrides(edges, clients, kappa, rounds))
    t0 = time.perf_counter()
    sim = run(cfg).simulation
    sim_wall_s = time.perf_counter() - t0
    dep = deployment(cfg)
    tree = {name: list(ids) for name, ids in (cfg.topology.edges or {}).items()}
    t0 = time.perf_counter()
    result, reports = asyncio.run(_deploy(dep, tree))
    wall_s = time.perf_counter() - t0
    per_center = [len(r.rounds) / len(result.rounds) for r in reports.values()]
    diff = float(np.max(np.abs(result.params - sim.params)))
    out = {
        "transport": "in-process asyncio tasks over loopback gRPC",
        "edges": edges,
        "clients": clients,
        "kappa_edge": kappa,
        "rounds": rounds,
        "center_rounds": len(result.rounds),
        "edge_rounds_per_center_round": min(per_center),
        "model_equal_to_sim": result.params.tobytes() == sim.params.tobytes(),
        "max_abs_diff": diff,
        "rejections": len(result.rejections),
        "wire_bytes": result.wire_bytes,
        "wall_s": round(wall_s, 3),
        "sim_wall_s": round(sim_wall_s, 3),
    }
    print(f"{'edges':>6} {'clients':>8} {'kappa':>6} {'rounds':>7} {'equal':>6} {'wall_s':>7}")
    print(
        f"{edges:>6} {clients:>8} {kappa:>6} {rounds:>7} "
        f"{out['model_equal_to_sim']!s:>6} {out['wall_s']:>7}"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
