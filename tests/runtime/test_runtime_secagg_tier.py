"""Issue 13 part 1: two-tier secure aggregation through edge aggregators over gRPC.

Device masks cancel at the edges, cluster masks at the center; the model equals the
flat simulator's with secure aggregation bit for bit (the ring sum is exact); an edge
that dies is an outer dropout and the round goes on with the other clusters."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from rthelpers import SMALL

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, deployment, new_token
from fedstrata.runtime.secagg_client import SecureClient
from fedstrata.runtime.secagg_session import SecureRound
from fedstrata.runtime.secagg_tier import OuterRound
from fedstrata.runtime.secagg_wire import Phase, decode_masked
from fedstrata.secagg.aggregator import ring_sum

EDGES = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
TIERED = [
    *SMALL, "data.num_clients=12", "rounds.clients_per_round=null", "secagg.enabled=true",
    "secagg.dropout_rate=0.0",
]  # fmt: skip


class _Killed(Exception):
    pass


class _EdgeDiesAt:
    """An edge's parent link that dies when the edge sends its outer ``phase``."""

    def __init__(self, link, phase: Phase) -> None:
        self.link, self.phase = link, phase

    def __getattr__(self, name):
        return getattr(self.link, name)

    async def secagg_step(self, round_idx, phase, data, **kw):
        if phase == self.phase:
            raise _Killed("edge killed")
        return await self.link.secagg_step(round_idx, phase, data, **kw)


async def _federation(dep, dead_edge: int | None = None):
    n, e = dep.num_clients, len(EDGES)
    tokens = {i: new_token() for i in range(n + e)}
    center = dep.center(participants=e)
    edges = [dep.edge(len(group)) for group in EDGES]
    async with CenterServer(center, TokenTable(tokens)) as top:
        servers = [CenterServer(edge, TokenTable(tokens)) for edge in edges]
        for s in servers:
            await s.__aenter__()
        try:

            async def tier(k):
                async with GrpcLink(top.target, n + k, tokens[n + k]) as link:
                    used = _EdgeDiesAt(link, Phase.INPUT) if k == dead_edge else link
                    try:
                        return await dep.tier(used, edges[k]).run()
                    except _Killed:
                        return None  # the edge process died; its channel closes

            async def client(cid, k):
                async with GrpcLink(servers[k].target, cid, tokens[cid]) as link:
                    return await dep.client(link, cid).run()

            async with asyncio.TaskGroup() as tg:
                main = tg.create_task(center.run(dep.initial_params()))
                for k, group in enumerate(EDGES):
                    tg.create_task(tier(k))
                    for cid in group:
                        tg.create_task(client(cid, k))
        finally:
            for s in servers:
                await s.__aexit__(None, None, None)
    return main.result()


@pytest.fixture
def spy(monkeypatch):
    """What the center's outer rounds receive, and every party's plaintext input."""
    seen: dict[str, Any] = {"center": [], "plain": [], "outer": []}
    step, send, init = SecureRound.step, SecureClient.send_input, OuterRound.__init__

    async def record_step(self, header, phase, data):
        if isinstance(self, OuterRound):
            seen["center"].append((header.round_idx, phase, data))
        return await step(self, header, phase, data)

    async def record_send(self, prepared, round_idx, vector, *rest, **kw):
        seen["plain"].append((round_idx, self.link.client_id, vector.copy()))
        return await send(self, prepared, round_idx, vector, *rest, **kw)

    def record_outer(self, *args, **kw):
        init(self, *args, **kw)
        seen["outer"].append(self)

    monkeypatch.setattr(SecureRound, "step", record_step)
    monkeypatch.setattr(SecureClient, "send_input", record_send)
    monkeypatch.setattr(OuterRound, "__init__", record_outer)
    return seen


@pytest.mark.parametrize(
    "dp", [[], ["privacy.mechanism=distributed", "privacy.epsilon=2"]], ids=["plain", "dist-dp"]
)
def test_two_tier_masks_train_the_flat_simulators_model(spy, dp):
    """Also with distributed DP: noise shares under two-tier masks, ε as simulated."""
    cfg = load_config(overrides=[*TIERED, *dp])
    sim = run(cfg).simulation
    dep = deployment(cfg)
    result = asyncio.run(_federation(dep))
    assert [len(r.outcome.accepted) for r in result.rounds] == [4, 4]
    assert result.params.tobytes() == sim.params.tobytes()
    eps = [None if r.privacy is None else r.privacy.epsilon_spent for r in result.rounds]
    assert eps == [None if m.privacy is None else m.privacy.epsilon_spent for m in sim.rounds]
    assert (eps[-1] is not None) == bool(dp)
    bits = spy["outer"][0].server.config.modulus_bits
    length = spy["outer"][0].server.config.vector_length
    plain = [v for _, cid, v in spy["plain"]]  # devices' and edges' (S_e + B_e) inputs
    for _, phase, data in spy["center"]:
        if phase is Phase.INPUT:
            masked = decode_masked(data, length, bits).vector
            assert not any(np.array_equal(masked, p) for p in plain)
    for outer in spy["outer"]:
        idx = outer.rnd.round_idx
        devices = [v for r, cid, v in spy["plain"] if r == idx and cid < dep.num_clients]
        assert outer.survivors() == 12
        assert np.array_equal(outer.total, ring_sum(devices, bits))


def test_a_dead_edge_leaves_its_cluster_out_and_the_round_completes(spy):
    dep = deployment(load_config(overrides=TIERED))
    result = asyncio.run(_federation(dep, dead_edge=1))
    first = result.rounds[0].outcome
    assert len(first.accepted) == 3
    assert dep.num_clients + 1 not in first.accepted
    outer = spy["outer"][0]
    bits = outer.server.config.modulus_bits
    alive = [v for r, cid, v in spy["plain"] if r == 0 and cid < 12 and cid not in EDGES[1]]
    assert outer.survivors() == 9
    assert np.array_equal(outer.total, ring_sum(alive, bits))
    assert all(np.isfinite(result.params))
    assert not np.array_equal(result.params, dep.initial_params())
