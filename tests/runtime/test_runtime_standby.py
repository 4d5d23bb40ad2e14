"""Active and standby centers, and edge re-homing, in one process over loopback.

A "crash" here cancels a center node or an edge (its server stops at once: no reply,
no ``DONE``) without releasing its lease; the multi-process chaos test SIGKILLs real
processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import numpy as np
from rthelpers import SMALL, tokens_for

from fedstrata.config import load_config
from fedstrata.runtime import (
    Backoff,
    CenterServer,
    GrpcLink,
    TierAggregator,
    TokenTable,
)
from fedstrata.runtime.chaos import AckLog, lost_acks
from fedstrata.runtime.failover import CenterSnapshot
from fedstrata.runtime.lease import LeaseTiming, SqlLease
from fedstrata.runtime.relink import FailoverLink
from fedstrata.runtime.standby import CenterNode, FailoverSettings

ROUNDS = 5
FAST = FailoverSettings(lease=LeaseTiming(lease_s=0.6), poll_s=0.05, rejoin_timeout_s=1.0)
RETRY = Backoff(attempts=8, base_s=0.05, max_s=0.3)


class MemorySink:
    """The shared checkpoint store of the test's center nodes (one process)."""

    def __init__(self) -> None:
        self.blobs: dict[int, bytes] = {}

    def snapshot(self, round_num: int, blob: bytes) -> None:
        self.blobs[round_num] = blob

    def flush(self) -> None:
        pass

    def latest(self) -> tuple[int, bytes] | None:
        return None if not self.blobs else (max(self.blobs), self.blobs[max(self.blobs)])

    def committed(self) -> int:
        return max(self.blobs, default=-1)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return [f"127.0.0.1:{p}" for p in ports]


async def _until(predicate, limit_s=60.0):
    async with asyncio.timeout(limit_s):
        while not predicate():
            await asyncio.sleep(0.01)


def _with(dep, *overrides):
    """``dep`` under another configuration of the same model and data (no rebuild)."""
    return dataclasses.replace(dep, config=load_config(overrides=[*SMALL, *overrides]))


def test_the_standby_takes_over_a_crashed_center_and_no_ack_is_lost(tmp_path, small_deployment):
    dep = _with(small_deployment, f"rounds.rounds={ROUNDS}")
    tokens = tokens_for(dep.num_clients)
    sink, acks = MemorySink(), AckLog()
    addrs = _free_ports(2)
    url = str(tmp_path / "registry.sqlite")

    def node(i):
        return CenterNode(
            dep, lease=SqlLease(url, "fed", f"center-{i}"), sink=sink, address=addrs[i],
            tokens=TokenTable(tokens), settings=FAST,
        )  # fmt: skip

    async def client(cid):
        link = FailoverLink(addrs, lambda t: GrpcLink(t, cid, tokens[cid]), connect_timeout_s=10)
        async with link:
            return await dep.client(acks.wrap(link, cid), cid, backoff=RETRY).run()

    async def main():
        active = asyncio.create_task(node(0).run())
        await _until(lambda: SqlLease(url, "fed", "probe").read() is not None)
        standby = asyncio.create_task(node(1).run())
        clients = [asyncio.create_task(client(c)) for c in range(dep.num_clients)]
        await _until(lambda: sink.committed() >= 1)
        active.cancel()  # crash mid-run
        outcome = await standby
        reports = await asyncio.gather(*clients)
        return outcome, reports

    outcome, reports = asyncio.run(main())
    assert outcome.epoch >= 2  # 2, or later if a loaded host's late renewals deposed it
    assert outcome.start_round >= 2
    assert outcome.serving_at is not None
    assert outcome.serving_at > outcome.acquired_at
    final = CenterSnapshot.from_bytes(sink.blobs[ROUNDS - 1])
    assert [h.round_idx for h in final.history] == list(range(ROUNDS))  # each round once
    assert {"1", str(outcome.epoch)} <= {h.run_id.rsplit(".", 1)[1] for h in final.history}
    assert all(h.accepted for h in final.history)
    assert acks.count() > 0
    assert lost_acks(acks.entries(), final.history) == []
    assert np.isfinite(outcome.result.params).all()
    assert all(r.rounds for r in reports)  # every client trained under both terms
    assert outcome.result.rounds[-1].outcome.round_idx == ROUNDS - 1


def test_a_standby_that_takes_a_released_lease_of_a_finished_run_does_nothing(
    tmp_path, small_deployment
):
    dep = small_deployment
    tokens = tokens_for(dep.num_clients)
    sink = MemorySink()
    addrs = _free_ports(2)
    url = str(tmp_path / "registry.sqlite")
    nodes = [
        CenterNode(
            dep,
            lease=SqlLease(url, "fed", f"c{i}"),
            sink=sink,
            address=addrs[i],
            tokens=TokenTable(tokens),
            settings=FAST,
        )
        for i in range(2)
    ]

    async def client(cid):
        async with FailoverLink(addrs[:1], lambda t: GrpcLink(t, cid, tokens[cid])) as link:
            return await dep.client(link, cid).run()

    async def main():
        first = await asyncio.gather(nodes[0].run(), *(client(c) for c in range(dep.num_clients)))
        second = await nodes[1].run()  # the lease was released: taken at once
        return first[0], second

    done, late = asyncio.run(main())
    assert done.result is not None
    assert len(done.result.rounds) == 2
    assert late.completed_before
    assert late.start_round == 2
    assert late.result is None


def test_clients_of_a_dead_edge_rehome_to_the_spare_and_the_run_completes(small_deployment):
    dep = _with(small_deployment, f"rounds.rounds={ROUNDS}", "rounds.clients_per_round=null")
    n = dep.num_clients
    split = [[0, 1, 2], [3, 4, 5]]
    tier_ids = [n, n + 1, n + 2]  # two edges and one spare
    tokens = tokens_for(n + 3)
    table = TokenTable(tokens)

    async def main():
        center = dep.center(participants=2, start_timeout_s=5.0, min_available=6)
        edges = [dep.edge(3, start_timeout_s=5.0) for _ in split] + [
            dep.edge(3, start_timeout_s=0.3)
        ]
        async with CenterServer(center, table) as top:
            servers = [CenterServer(e, table, keepalive_s=1.0) for e in edges]
            for s in servers:
                await s.__aenter__()

            async def tier(k):
                async with GrpcLink(top.target, tier_ids[k], tokens[tier_ids[k]]) as link:
                    return await TierAggregator(link, edges[k], dep.size).run()

            async def client(cid, k):
                homes = [servers[k].target, servers[2].target, top.target]
                link = FailoverLink(
                    homes, lambda t: GrpcLink(t, cid, tokens[cid]), connect_timeout_s=10
                )
                async with link:
                    return await dep.client(link, cid, backoff=RETRY).run(), link

            tiers = [asyncio.create_task(tier(k)) for k in range(3)]
            clients = [asyncio.create_task(client(c, k)) for k, g in enumerate(split) for c in g]
            run = asyncio.create_task(center.run(dep.initial_params()))
            await _until(lambda: center.coordinator.round_idx >= 1)
            await servers[1].abort()  # edge 1 dies
            tiers[1].cancel()
            result = await run
            out = await asyncio.gather(*clients)
            for t in tiers:
                t.cancel()
            for s in servers:
                await s.__aexit__(None, None, None)
            return result, out

    result, out = asyncio.run(main())
    accepted = [set(r.outcome.accepted) for r in result.rounds]
    assert len(accepted) == ROUNDS
    assert all(tier_ids[0] in a for a in accepted)  # edge 0 never missed a round
    assert tier_ids[2] in accepted[-1]
    assert tier_ids[1] not in accepted[-1]
    rehomed = [link for (_, link), cid in zip(out, range(n), strict=True) if cid in split[1]]
    assert all(link.target.endswith(str(link.targets[1]).rsplit(":", 1)[1]) for link in rehomed)
    assert all(report.rounds[-1] == ROUNDS - 1 for report, _ in out)


def test_a_deposed_center_stops_serving_without_telling_anyone_the_run_is_over(
    tmp_path, small_deployment
):
    dep = _with(small_deployment, "rounds.rounds=50")
    tokens = tokens_for(dep.num_clients)
    sink = MemorySink()
    (addr,) = _free_ports(1)
    url = str(tmp_path / "registry.sqlite")
    node = CenterNode(dep, lease=SqlLease(url, "fed", "a"), sink=sink, address=addr,
                      tokens=TokenTable(tokens), settings=FAST)  # fmt: skip

    async def client(cid):
        link = FailoverLink([addr], lambda t: GrpcLink(t, cid, tokens[cid]), connect_timeout_s=30)
        async with link:
            return await dep.client(link, cid, backoff=RETRY).run()

    async def main():
        active = asyncio.create_task(node.run())
        clients = [asyncio.create_task(client(c)) for c in range(dep.num_clients)]
        await _until(lambda: sink.committed() >= 1)
        thief = SqlLease(url, "fed", "b")
        while thief.acquire(thief.read()) is None:  # a renewal may race the theft
            await asyncio.sleep(0)
        await _until(lambda: node.terms[0].deposed)  # deposed, as if its lease had lapsed
        await asyncio.sleep(0.2)
        running = [not c.done() for c in clients]  # searching again, not told DONE
        for task in (active, *clients):
            task.cancel()
        await asyncio.gather(active, *clients, return_exceptions=True)
        return running

    running = asyncio.run(main())
    assert all(running)
    assert sink.committed() < 49
    assert len(node.terms) == 1  # the thief renews nothing, but the node was cancelled first


def test_a_deposed_live_center_follows_again_and_finishes_the_run(tmp_path, small_deployment):
    """A live center whose lease is taken from it (as when its renewals come late on a
    loaded host) stops serving, follows again as a standby, takes the lapsed lease back
    in a new term and completes the run from the newest checkpoint; no ack is lost."""
    rounds = 20  # the theft comes before the run ends
    dep = _with(small_deployment, f"rounds.rounds={rounds}")
    tokens = tokens_for(dep.num_clients)
    sink, acks = MemorySink(), AckLog()
    (addr,) = _free_ports(1)
    url = str(tmp_path / "registry.sqlite")
    node = CenterNode(dep, lease=SqlLease(url, "fed", "a"), sink=sink, address=addr,
                      tokens=TokenTable(tokens), settings=FAST)  # fmt: skip

    async def client(cid):
        link = FailoverLink([addr], lambda t: GrpcLink(t, cid, tokens[cid]), connect_timeout_s=30)
        async with link:
            return await dep.client(acks.wrap(link, cid), cid, backoff=RETRY).run()

    async def main():
        active = asyncio.create_task(node.run())
        clients = [asyncio.create_task(client(c)) for c in range(dep.num_clients)]
        await _until(lambda: sink.committed() >= 1)
        thief = SqlLease(url, "fed", "b")
        while thief.acquire(thief.read()) is None:  # a renewal may race the theft
            await asyncio.sleep(0)
        outcome = await active  # the thief never renews: the lease lapses back
        await asyncio.gather(*clients)
        return outcome

    outcome = asyncio.run(main())
    first, *_, last = node.terms  # more than 2 if a loaded machine deposed it again
    assert first.deposed
    assert first.epoch == 1
    assert last is outcome
    assert not outcome.deposed
    assert all(t.deposed for t in node.terms[:-1])
    assert outcome.epoch >= 3  # a new term after the thief's
    assert 2 <= outcome.start_round < rounds
    final = CenterSnapshot.from_bytes(sink.blobs[rounds - 1])
    assert [h.round_idx for h in final.history] == list(range(rounds))
    terms = {h.run_id.rsplit(".", 1)[1] for h in final.history}
    assert {"1", str(outcome.epoch)} <= terms <= {str(t.epoch) for t in node.terms}
    assert acks.count() > 0
    assert lost_acks(acks.entries(), final.history) == []
