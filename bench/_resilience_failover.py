"""Failover part of ``bench/resilience.py`` (issue 15 parts 4-5): ``measure(quick)``.

1. Center failover (repeats, one process, mutual TLS on loopback): two center nodes
   (lease in SQLite, checkpoints on local disk, lease 1 s), six clients holding both
   addresses; after round 1 the active node is cancelled with its server stopped at
   once (no reply, no ``DONE``, its lease not released). Time: the kill -> the standby
   opened its first round (the federation accepts updates again).
2. Edge failover (repeats, same process): a center, two edges and a spare edge, three
   clients per edge listing [edge, spare, center]; after round 1 an edge's server is
   stopped at once. Time: the kill -> the center reaches every client again (the
   orphans re-homed to the spare and the spare registered with the center).
3. Chaos (OS processes, ``fedstrata.runtime.chaos_run``): two center nodes, two edges,
   one spare, ten clients, each a process; 20% of the client processes (after round
   R-5 of R), one edge (after R-4) and the active center (after R-3) are SIGKILLed
   mid-round; R = 10 (14 in the full run). Reported: the run
   completed, acknowledged updates (center ``SubmitReply`` ok, from the participants'
   logs) missing from the committed history, the recoveries, and the final accuracy
   against the undisturbed run of the same configuration (the simulator's: the runtime
   trains the same model, tested in tests/runtime).
4. Availability soak (simulated clock, ``fedstrata.runtime.availability``): one year
   (90 days in quick) of faults at the stated rates (center and edge MTBF 24 h, MTTR 2
   h; client MTBF 12 h, MTTR 1 h; 10 edges x 10 clients, quorum 50%; with standbys: one
   standby center, one spare edge (10% of 10), pool replacement 30 s), failover times
   set to the medians measured in 1 and 2; with and without standbys, same seed. Also
   the chaos run's real-process availability (1 - time without an active center /
   wall time).

The machine (2 shared cores) is loaded: process start-up dominates the chaos run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fedstrata.api import run as simulate_run
from fedstrata.checkpoint import Checkpointer, Tier, open_store
from fedstrata.config import load_config
from fedstrata.runtime import (
    Backoff,
    CenterServer,
    GrpcLink,
    TierAggregator,
    TokenTable,
    deployment,
    make_dev_pki,
    new_token,
)
from fedstrata.runtime.availability import SoakSpec, compare
from fedstrata.runtime.chaos import ChaosSpec
from fedstrata.runtime.chaos_run import ChaosPlan, run_chaos
from fedstrata.runtime.lease import LeaseTiming, SqlLease
from fedstrata.runtime.relink import FailoverLink
from fedstrata.runtime.spares import SparePolicy, target_spares
from fedstrata.runtime.standby import CenterNode, FailoverSettings

DAY_S = 24 * 3600.0
BASE = [
    "output.run_store=false",
    "sim.workers=0",
    "model.kind=logreg",
    "client.epochs=null",
    "rounds.clients_per_round=null",
]
RETRY = Backoff(attempts=8, base_s=0.05, max_s=0.5)


def _addresses(n: int) -> list[str]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    out = [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    for s in socks:
        s.close()
    return out


async def _until(ready: Any, limit_s: float = 120.0) -> None:
    async with asyncio.timeout(limit_s):
        while not ready():
            await asyncio.sleep(0.005)


async def _center_failover(dep: Any, folder: Path, pki: Any, tokens: dict[int, str]) -> float:
    addrs = _addresses(2)
    store = str(folder / "ckpt")
    settings = FailoverSettings(lease=LeaseTiming(1.0), poll_s=0.05, rejoin_timeout_s=1.0)

    def node(i: int) -> CenterNode:
        lease = SqlLease(str(folder / "registry.sqlite"), "bench", f"center-{i}")
        sink = Checkpointer([Tier(open_store(store, keep=3), every_rounds=1)])
        return CenterNode(dep, lease=lease, sink=sink, address=addrs[i],
                          tokens=TokenTable(tokens), tls=pki.server, mutual=True,
                          settings=settings)  # fmt: skip

    async def client(cid: int) -> None:
        def make(t: str) -> GrpcLink:
            return GrpcLink(t, cid, tokens[cid], tls=pki.client(cid), keepalive_s=1.0)

        async with FailoverLink(addrs, make, connect_timeout_s=20) as link:
            await dep.client(link, cid, backoff=RETRY).run()

    first = node(0)
    active = asyncio.create_task(first.run())
    await _until(lambda: first.center is not None)
    standby_node = node(1)
    standby = asyncio.create_task(standby_node.run())
    clients = [asyncio.create_task(client(c)) for c in range(dep.num_clients)]
    await _until(lambda: first.center.coordinator.round_idx >= 2)
    killed_at = time.monotonic()
    active.cancel()  # its server stops at once: calls break, no DONE, lease not released
    await standby
    await asyncio.gather(*clients, return_exceptions=True)
    took_over = standby_node.terms[0]  # a later term (deposed by late renewals) is not it
    assert took_over.serving_at is not None
    return took_over.serving_at - killed_at


async def _edge_failover(dep: Any, pki: Any, tokens: dict[int, str]) -> float:
    n = dep.num_clients
    groups = [list(range(n // 2)), list(range(n // 2, n))]
    tiers = [n, n + 1, n + 2]
    table = TokenTable(tokens)
    center = dep.center(participants=2, min_available=n, start_timeout_s=30.0)
    edges = [dep.edge(len(g), start_timeout_s=30.0) for g in groups]
    edges.append(dep.edge(n, start_timeout_s=0.2))  # the spare
    async with CenterServer(center, table, tls=pki.server, mutual=True) as top:
        servers = [CenterServer(e, table, tls=pki.server, mutual=True, keepalive_s=1.0)
                   for e in edges]  # fmt: skip
        for s in servers:
            await s.__aenter__()

        async def tier(k: int) -> None:
            tid = tiers[k]
            async with GrpcLink(top.target, tid, tokens[tid], tls=pki.client(tid)) as link:
                await TierAggregator(link, edges[k], dep.size).run()

        async def client(cid: int, k: int) -> None:
            def make(t: str) -> GrpcLink:
                return GrpcLink(t, cid, tokens[cid], tls=pki.client(cid), keepalive_s=1.0)

            homes = [servers[k].target, servers[2].target, top.target]
            async with FailoverLink(homes, make, connect_timeout_s=20) as link:
                await dep.client(link, cid, backoff=RETRY).run()

        tasks = [asyncio.create_task(tier(k)) for k in range(3)]
        tasks += [asyncio.create_task(client(c, k)) for k, g in enumerate(groups) for c in g]
        run = asyncio.create_task(center.run(dep.initial_params()))
        await _until(lambda: center.coordinator.round_idx >= 2)
        killed_at = time.monotonic()
        await servers[1].abort()
        tasks[1].cancel()
        await _until(lambda: center.roster.reachable < n)
        await _until(lambda: center.roster.reachable >= n)
        recovered = time.monotonic() - killed_at
        await run
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in servers:
            await s.__aexit__(None, None, None)
    return recovered


def _repeats(quick: bool) -> tuple[list[float], list[float]]:
    cfg = load_config(overrides=[*BASE, "data.num_clients=6", "rounds.rounds=5", "client.steps=2"])
    dep = deployment(cfg)
    centers, edges = [], []
    for r in range(3 if quick else 7):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            pki = make_dev_pki(folder / "pki", range(dep.num_clients + 3))
            tokens = {i: new_token() for i in range(dep.num_clients + 3)}
            centers.append(asyncio.run(_center_failover(dep, folder, pki, tokens)))
            edge_dep = dataclasses.replace(
                dep,
                config=load_config(
                    overrides=[
                        *BASE,
                        "data.num_clients=6",
                        f"rounds.rounds={6 + r % 2}",
                        "client.steps=2",
                    ]
                ),
            )
            edges.append(asyncio.run(_edge_failover(edge_dep, pki, tokens)))
    return centers, edges


def _chaos(quick: bool) -> tuple[dict[str, Any], list[float], list[float]]:
    n = 10
    rounds = 10 if quick else 14
    kill = math.ceil(0.2 * n)  # >= 20% of the client processes
    overrides = (*BASE, f"data.num_clients={n}", f"rounds.rounds={rounds}",
                 f"rounds.min_clients={n - kill}", "rounds.deadline_s=60",
                 "client.steps=10", "client.lr=0.3")  # fmt: skip
    spares = target_spares(SparePolicy(fraction=0.10, edge_capacity=n // 2), n)
    addr = _addresses(4 + spares)
    with tempfile.TemporaryDirectory() as tmp:
        half = n // 2
        groups = (tuple(range(half)), tuple(range(half, n)))
        spec = ChaosSpec(overrides, tmp, centers=tuple(addr[:2]), edges=tuple(addr[2:4]),
                         spares=tuple(addr[4:]), groups=groups, lease_s=1.0)  # fmt: skip
        plan = ChaosPlan(kill_clients=kill, kill_edge=True, kill_center=True,
                         client_round=rounds - 5, edge_round=rounds - 4,
                         center_round=rounds - 3, seed=7, limit_s=300.0)  # fmt: skip
        result = run_chaos(spec, plan)
    undisturbed = simulate_run(load_config(overrides=list(overrides))).simulation.final_accuracy
    acc = result.accuracy
    figures = {
        "chaos_completed": result.completed,
        "chaos_accuracy": acc,
        "undisturbed_accuracy": undisturbed,
        "chaos_acc_delta_pt": None if acc is None else 100.0 * (undisturbed - acc),
        "acked_updates": result.acked,
        "acked_updates_lost": result.acked_lost,
        "chaos_clients": n,
        "chaos_killed_clients": len(result.killed_clients),
        "chaos_killed_client_frac": len(result.killed_clients) / n,
        "chaos_killed_edges": len(result.killed_edges),
        "chaos_killed_centers": result.killed_centers,
        "chaos_center_failover_s": result.center_failover_s,
        "chaos_edge_failover_s": result.edge_failover_s,
        "chaos_wall_s": result.wall_s,
        "availability_real": result.availability,
        "spare_edges": spares,
    }
    return figures, result.center_failover_s, result.edge_failover_s


def measure(quick: bool) -> dict[str, Any]:
    centers, edges = _repeats(quick)
    chaos, real_centers, real_edges = _chaos(quick)
    center_s, edge_s = statistics.median(centers), statistics.median(edges)
    soak = SoakSpec(center_failover_s=center_s, edge_failover_s=edge_s,
                    horizon_s=(90 if quick else 365) * DAY_S)  # fmt: skip
    with_standby, alone = compare(soak, seed=11)
    return {
        "center_failover_s": center_s,
        "edge_failover_s": edge_s,
        "center_failover_runs_s": centers,
        "edge_failover_runs_s": edges,
        **chaos,
        "availability": with_standby.availability,
        "availability_no_standby": alone.availability,
        "soak_days": soak.horizon_s / DAY_S,
        "soak_center_failovers": with_standby.center_failovers,
        "soak_edge_rehomes": with_standby.edge_rehomes,
        "failover_targets_met": max(center_s, edge_s, *real_centers, *real_edges, 0.0) <= 5.0,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(measure(quick=True)))
