"""The center's wire count (runtime/wire.py ``WireCounter``): every gRPC message, the
part of it in messages that carry data, and the data itself, which is what the
simulator counts."""

from __future__ import annotations

import asyncio

import pytest
from rthelpers import SMALL, tokens_for

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, deployment


async def _federation(dep):
    tokens = tokens_for(dep.num_clients)
    center = dep.center()
    async with CenterServer(center, TokenTable(tokens)) as server:

        async def one(cid):
            async with GrpcLink(server.target, cid, tokens[cid]) as link:
                await dep.client(link, cid).run()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(center.run(dep.initial_params()))
            for cid in range(dep.num_clients):
                tg.create_task(one(cid))
    return server.counter


@pytest.mark.parametrize("extra", [[], ["compression.preset=int8", "downlink.preset=int8"]])
def test_payload_is_the_simulators_count_and_framing_and_control_come_on_top(extra):
    cfg = load_config(overrides=[*SMALL, *extra])
    sim = run(cfg).simulation
    counter = asyncio.run(_federation(deployment(cfg)))
    assert counter.payload == sum(m.bytes_up + m.bytes_down for m in sim.rounds)
    assert counter.payload < counter.data < counter.total
    assert counter.total == counter.sent + counter.received
