"""A deployment of an explicit tree in one process over loopback gRPC: the center, one
aggregator tier per edge of ``topology.edges`` and every client, as asyncio tasks.

A module of its own (not ``conftest``) so the tests and ``bench/runtime_tiers.py``
import it by a unique name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fedstrata.runtime import (
    Backoff,
    CenterServer,
    Deployment,
    GrpcLink,
    RuntimeResult,
    TierReport,
    TokenTable,
    new_token,
)
from fedstrata.runtime.client import ClientAgent
from fedstrata.runtime.relink import FailoverLink
from fedstrata.runtime.sched_reports import DeviceReport

_FAST = Backoff(attempts=6, base_s=0.05, max_s=0.5)


@dataclass
class TreeRun:
    """The center's result and each edge's report (None: the edge was killed)."""

    result: RuntimeResult
    edges: dict[str, TierReport | None] = field(default_factory=dict)


async def run_tree(
    dep: Deployment,
    edges: Mapping[str, Sequence[int]],
    *,
    kill: str | None = None,
    kill_after: int = 1,
    parents: Mapping[int, Sequence[str]] | None = None,
    min_available: int | None = None,
    profiles: Callable[[int], DeviceReport] | None = None,
    agents: Callable[[GrpcLink, int], ClientAgent] | None = None,
) -> TreeRun:
    """Center <- one tier per edge <- its clients; tier ids follow ``edges``' order.

    ``kill``: the edge whose tier is cancelled after it served ``kill_after`` edge
    rounds (its server stops; its clients re-home along ``parents``: client id ->
    edge names to try, in order). ``min_available``: the center's quorum of reachable
    clients before each round. ``profiles``: each client's device report under
    ``scheduling`` (default: measured at start-up). ``agents``: builds a client's
    agent over its link (default: ``dep.client`` with ``profiles``).
    """
    n, names = dep.num_clients, list(edges)
    tier_ids = {name: n + k for k, name in enumerate(names)}
    tokens = {i: new_token() for i in range(n + len(names))}
    table = TokenTable(tokens)
    center = dep.center(participants=len(names), min_available=min_available)
    centers = {name: dep.edge(len(edges[name])) for name in names}
    out = TreeRun(RuntimeResult(params=dep.initial_params()))
    async with CenterServer(center, table) as top:
        servers = {name: CenterServer(c, table) for name, c in centers.items()}
        for s in servers.values():
            await s.__aenter__()
        try:
            targets = {name: s.target for name, s in servers.items()}

            async def tier(name: str) -> None:
                async with GrpcLink(top.target, tier_ids[name], tokens[tier_ids[name]]) as link:
                    agg = dep.tier(link, centers[name], tier_id=tier_ids[name])
                    task = asyncio.ensure_future(agg.run())
                    if name == kill:  # as SIGKILL: connections break, no DONE is sent
                        await _after_rounds(agg, kill_after)
                        await servers[name].abort()
                        task.cancel()
                        out.edges[name] = None
                        return
                    out.edges[name] = await task

            async def client(cid: int, name: str) -> None:
                order = [targets[e] for e in (name, *(parents or {}).get(cid, ()))]

                def make(target: str) -> GrpcLink:
                    return GrpcLink(target, cid, tokens[cid])

                async with FailoverLink(order, make, connect_timeout_s=20, probe_s=1) as link:
                    profile = None if profiles is None else profiles(cid)
                    agent = (
                        dep.client(link, cid, backoff=_FAST, profile=profile)  # type: ignore[arg-type]
                        if agents is None
                        else agents(link, cid)  # type: ignore[arg-type]
                    )
                    await agent.run()

            async with asyncio.TaskGroup() as tg:
                main = tg.create_task(center.run(dep.initial_params()))
                for name in names:
                    tg.create_task(tier(name))
                    for cid in edges[name]:
                        tg.create_task(client(cid, name))
            out.result = main.result()
        finally:
            for name, s in servers.items():
                if name != kill:
                    await s.__aexit__(None, None, None)
    return out


async def _after_rounds(agg: object, count: int) -> None:
    center = agg.center  # type: ignore[attr-defined]
    while center._rounds_started < count:
        await asyncio.sleep(0.01)


async def run_regions(
    dep: Deployment,
    regions: Mapping[str, Mapping[str, Sequence[int]]],
    *,
    profiles: Callable[[int], DeviceReport] | None = None,
    agents: Callable[[GrpcLink, int], ClientAgent] | None = None,
) -> TreeRun:
    """Center <- one named tier per region <- one tier per edge <- its clients.

    Participant ids: clients 0..n-1, then the regions, then the edges, in the order of
    ``regions``. ``profiles``, ``agents``: as for :func:`run_tree`."""
    n = dep.num_clients
    edges = {e: ids for rg in regions.values() for e, ids in rg.items()}
    ids = {name: n + k for k, name in enumerate([*regions, *edges])}
    tokens = {i: new_token() for i in range(n + len(ids))}
    table = TokenTable(tokens)
    center = dep.center(participants=len(regions))
    centers = {r: dep.edge(len(rg)) for r, rg in regions.items()}
    centers.update({e: dep.edge(len(c)) for e, c in edges.items()})
    out = TreeRun(RuntimeResult(params=dep.initial_params()))
    parent = {e: r for r, rg in regions.items() for e in rg}
    async with CenterServer(center, table) as top:
        servers = {name: CenterServer(c, table) for name, c in centers.items()}
        for s in servers.values():
            await s.__aenter__()
        try:
            targets = {name: s.target for name, s in servers.items()}
            targets["center"] = top.target

            async def tier(name: str) -> None:
                up = targets[parent.get(name, "center")]
                async with GrpcLink(up, ids[name], tokens[ids[name]]) as link:
                    node = name if name in regions else None
                    agg = dep.tier(link, centers[name], tier_id=ids[name], node=node)
                    out.edges[name] = await agg.run()

            async def client(cid: int, name: str) -> None:
                async with GrpcLink(targets[name], cid, tokens[cid]) as link:
                    profile = None if profiles is None else profiles(cid)
                    agent = (
                        dep.client(link, cid, profile=profile)  # type: ignore[arg-type]
                        if agents is None
                        else agents(link, cid)  # type: ignore[arg-type]
                    )
                    await agent.run()

            async with asyncio.TaskGroup() as tg:
                main = tg.create_task(center.run(dep.initial_params()))
                for name in centers:
                    tg.create_task(tier(name))
                for e, cids in edges.items():
                    for cid in cids:
                        tg.create_task(client(cid, e))
            out.result = main.result()
        finally:
            for s in servers.values():
                await s.__aexit__(None, None, None)
    return out
