"""Issue 18 part 3: over-selection with only a deadline (FedScale's 1.3x baseline, no
allocation, no Oort, no registry) runs in deployment: the center's scheduler invites
``ceil(k (1 + overselect))`` clients."""

from __future__ import annotations

import asyncio

from rthelpers import SMALL, tokens_for

from fedstrata.config import load_config
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, check_supported, deployment


async def _federation(dep):
    tokens = tokens_for(dep.num_clients)
    center = dep.center()
    async with CenterServer(center, TokenTable(tokens)) as server:

        async def one(cid):
            async with GrpcLink(server.target, cid, tokens[cid]) as link:
                return await dep.client(link, cid).run()

        async with asyncio.TaskGroup() as tg:
            main = tg.create_task(center.run(dep.initial_params()))
            for cid in range(dep.num_clients):
                tg.create_task(one(cid))
    return main.result()


def test_overselection_with_only_a_deadline_invites_more_clients():
    cfg = load_config(
        overrides=[
            *SMALL, "rounds.deadline_s=60", "scheduling.overselect=0.5",
            "rounds.clients_per_round=2",
        ]
    )  # fmt: skip
    check_supported(cfg)
    assert cfg.scheduling.selector == "random"
    assert not cfg.scheduling.allocation
    assert cfg.scheduling.registry_url is None
    result = asyncio.run(_federation(deployment(cfg)))
    assert [r.outcome.selected for r in result.rounds] == [3, 3]  # ceil(2 x 1.5)
