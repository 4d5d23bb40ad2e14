"""Tiers as in the simulator: a deployed HierFAVG tree against the simulator's run.

Two deployments of the same configuration: (1) a center, one edge aggregator per edge
of ``topology.edges`` and every client as asyncio tasks of one process, talking gRPC
over loopback (each party its own ``CenterServer`` or ``GrpcLink``; no shared state but
the configuration): ``wall_s``, ``model_equal_to_sim``; (2) real OS processes (what
``fedstrata center`` and ``fedstrata serve aggregator`` run): a center, one process per
edge aggregator and one per edge's clients (its clients as asyncio tasks), forked from
a forkserver that preloaded torch: ``processes_*`` (wall time includes the processes'
start). The edges
run ``kappa_edge`` edge rounds per center round over their share of the cohort
(``rounds.clients_per_round`` drawn once for the tree), uplink int8 compression and
int8 re-compressed partials between the tiers. The same configuration runs in the
simulator's tree driver; the models are compared bit for bit. Then (3) the in-process
tree under scheduling (Oort, over-selection, the device registry): the center decides
over the whole tree from the profiles its edges forward (each client measures its
device at start-up); ``scheduled_first_round_equal_to_sim`` compares the first
round's cohort and allocated work with the simulator's reading those profiles from a
registry, ``scheduled_model_equal_to_replay`` the model with the simulator replaying
the deployment's ``round_history`` (``scheduling.replay_url``).

| mode    | edges | clients | kappa_edge | rounds |
|---------|-------|---------|------------|--------|
| quick   | 2     | 8       | 2          | 3      |
| full    | 4     | 24      | 3          | 5      |

Measured (``--quick``, 2 loaded shared cores, 2026-12-08): both deployments' models
bit-identical to the simulator's (``max_abs_diff`` 0.0), 3 center rounds of 2 edge
rounds each; in-process 0.6 s, 5 processes 19.4 s (mostly process start-up), the
simulator 4.9 s (it also evaluates and times its network model). Scheduled
(2026-12-08): 7 of 8 clients invited (6 x 1.1), the first round's decision as the
simulator's and the model as its replay's (both true), 0.39 s.

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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _center_proc(overrides: list[str], port: int, tokens: dict[int, str], out: Any) -> None:
    from fedstrata.config import load_config
    from fedstrata.runtime import TokenTable
    from fedstrata.runtime.commands import run_center

    cfg = load_config(overrides=overrides)
    result = asyncio.run(
        run_center(
            cfg, address=f"127.0.0.1:{port}", tokens=TokenTable(tokens), tls=None,
            mutual=False, participants=len(cfg.topology.edges or {}),
        )
    )  # fmt: skip
    out.put(("center", result.params.tobytes(), len(result.rounds)))


def _edge_proc(
    overrides: list[str], k: int, ports: tuple[int, int], tokens: dict[int, str], out: Any
) -> None:
    from fedstrata.config import load_config
    from fedstrata.runtime import TokenTable
    from fedstrata.runtime.commands import run_aggregator

    cfg = load_config(overrides=overrides)
    n, clients = cfg.data.num_clients, list((cfg.topology.edges or {}).values())[k]
    report = asyncio.run(
        run_aggregator(
            cfg, parent=f"127.0.0.1:{ports[0]}", tier_id=n + k, token=tokens[n + k],
            parent_tls=None, clients=len(clients), address=f"127.0.0.1:{ports[1]}",
            tokens=TokenTable(tokens), tls=None, mutual=False,
        )
    )  # fmt: skip
    out.put(("edge", k, len(report.rounds)))


def _clients_proc(
    overrides: list[str], cids: list[int], port: int, tokens: dict[int, str], out: Any
) -> None:
    from fedstrata.config import load_config
    from fedstrata.runtime import GrpcLink, deployment

    dep = deployment(load_config(overrides=overrides))

    async def one(cid: int) -> None:
        async with GrpcLink(f"127.0.0.1:{port}", cid, tokens[cid]) as link:
            await dep.client(link, cid).run()

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            for cid in cids:
                tg.create_task(one(cid))

    asyncio.run(main())
    out.put(("clients", port))


def _processes(overrides: list[str], edges: dict[str, list[int]], n: int) -> dict[str, Any]:
    """Center, one process per edge and one per edge's clients (asyncio tasks in it)."""
    import multiprocessing as mp
    import socket

    from fedstrata.runtime import new_token

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "fedstrata.runtime.commands", "fedstrata.torch_adapter"])
    tokens = {i: new_token() for i in range(n + len(edges))}
    top, ports = _free_port(), [_free_port() for _ in edges]
    out, procs = ctx.Queue(), []
    t0 = time.perf_counter()
    jobs: list[tuple[Any, tuple[Any, ...]]] = [(_center_proc, (overrides, top, tokens, out))]
    jobs += [(_edge_proc, (overrides, k, (top, ports[k]), tokens, out)) for k in range(len(edges))]
    for target, args in jobs:
        procs.append(ctx.Process(target=target, args=args, daemon=True))
        procs[-1].start()
    for k, cids in enumerate(edges.values()):
        while True:  # the edge listens once its process started
            try:
                socket.create_connection(("127.0.0.1", ports[k]), timeout=1.0).close()
                break
            except OSError:
                time.sleep(0.1)
        args = (overrides, cids, ports[k], tokens, out)
        procs.append(ctx.Process(target=_clients_proc, args=args, daemon=True))
        procs[-1].start()
    got = [out.get(timeout=300) for _ in procs]
    wall_s = time.perf_counter() - t0
    for p in procs:
        p.join(10)
    center = next(g for g in got if g[0] == "center")
    per_edge = [g[2] for g in got if g[0] == "edge"]
    return {"params": center[1], "rounds": center[2], "edge_rounds": per_edge,
            "processes": len(procs), "wall_s": wall_s}  # fmt: skip


def _scheduled(base: list[str], tree: dict[str, list[int]]) -> dict[str, Any]:
    """The tree under scheduling (Oort, over-selection, the registry): the center
    decides over the whole tree from the profiles its edges forward (measured at each
    client's start-up). The simulator reading those profiles from a registry makes the
    first round's decision; replaying the deployment's record it computes its model."""
    import tempfile
    from pathlib import Path

    from fedstrata.api import run
    from fedstrata.config import load_config
    from fedstrata.runtime import deployment
    from fedstrata.scheduling import Registry

    sched = ["scheduling.selector=oort", "scheduling.overselect=0.1", "rounds.deadline_s=60"]
    with tempfile.TemporaryDirectory() as tmp:
        deployed, sim_db = Path(tmp) / "deployed.db", Path(tmp) / "sim.db"
        cfg = load_config(overrides=[*base, *sched, f"scheduling.registry_url={deployed}"])
        t0 = time.perf_counter()
        result, _ = asyncio.run(_deploy(deployment(cfg), tree))
        wall_s = time.perf_counter() - t0
        with Registry.open(deployed) as reg, Registry.open(sim_db) as sim_reg:
            sim_reg.upsert_devices(reg.devices())
            got = reg.history()
        run(load_config(overrides=[*base, *sched, f"scheduling.registry_url={sim_db}"]))
        with Registry.open(sim_db) as sim_reg:
            want = sim_reg.history()
        replay = load_config(overrides=[*base, *sched, f"scheduling.replay_url={deployed}"])
        replayed = run(replay).simulation.params

    def first(h: Any) -> list[tuple[int, int]]:
        m = h.round_idx == 0
        return sorted(zip(h.device_id[m].tolist(), h.assigned_work[m].tolist(), strict=True))

    return {
        "scheduled_cohort_size": len(first(got)),
        "scheduled_first_round_equal_to_sim": first(got) == first(want),
        "scheduled_history_rows": len(got),
        "scheduled_model_equal_to_replay": result.params.tobytes() == replayed.tobytes(),
        "scheduled_wall_s": round(wall_s, 3),
    }


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
    procs = _processes(_overrides(edges, clients, kappa, rounds), tree, clients)
    proc_params = np.frombuffer(procs["params"], dtype=np.float32)
    out = {
        "transport": "in-process asyncio tasks over loopback gRPC; then OS processes",
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
        "processes": procs["processes"],
        "processes_center_rounds": procs["rounds"],
        "processes_edge_rounds_per_center_round": min(procs["edge_rounds"]) / procs["rounds"],
        "processes_model_equal_to_sim": procs["params"] == sim.params.tobytes(),
        "processes_max_abs_diff": float(np.max(np.abs(proc_params - sim.params))),
        "processes_wall_s": round(procs["wall_s"], 3),
        **_scheduled(_overrides(edges, clients, kappa, rounds), tree),
    }
    print(f"{'edges':>6} {'clients':>8} {'kappa':>6} {'rounds':>7} {'equal':>6} {'wall_s':>7}")
    print(
        f"{edges:>6} {clients:>8} {kappa:>6} {rounds:>7} "
        f"{out['model_equal_to_sim']!s:>6} {out['wall_s']:>7}"
    )
    print(
        f"scheduled (Oort, over-selection): first round as the simulator's: "
        f"{out['scheduled_first_round_equal_to_sim']}; model as its replay's: "
        f"{out['scheduled_model_equal_to_replay']}; {out['scheduled_wall_s']} s"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
