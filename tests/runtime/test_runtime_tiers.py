"""Compressed uplink and aggregator tiers, in one process over loopback."""

import asyncio

import numpy as np
import pytest

from fedstrata.aggregation import MeanState
from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.errors import PayloadError
from fedstrata.runtime import (
    CenterServer,
    GrpcLink,
    TierAggregator,
    TokenTable,
    decode_partial,
    deployment,
    encode_partial,
    new_token,
)

SMALL = [
    "output.run_store=false",
    "sim.workers=0",
    "data.num_clients=6",
    "rounds.rounds=2",
    "rounds.clients_per_round=5",
    "model.kind=logreg",
    "client.steps=3",
    "client.epochs=null",
]


@pytest.mark.parametrize("preset", ["int8", "topk1_int8_ef"])
def test_compressed_runtime_matches_the_simulator(preset, federation):
    cfg = load_config(overrides=[*SMALL, f"compression.preset={preset}"])
    sim = run(cfg).simulation
    result, _ = asyncio.run(federation(deployment(cfg)))
    assert not result.rejections
    for got, want in zip(result.rounds, sim.rounds, strict=True):
        assert (got.bytes_up, got.bytes_down) == (want.bytes_up, want.bytes_down)
    assert result.params.tobytes() == sim.params.tobytes()


def test_partial_round_trips_bit_for_bit():
    rng = np.random.default_rng(0)
    state = MeanState(rng.normal(size=7), total_weight=3.5, count=2)
    back = decode_partial(encode_partial(state))
    assert back.weighted_sum.tobytes() == state.weighted_sum.tobytes()
    assert (back.total_weight, back.count) == (3.5, 2)
    with pytest.raises(PayloadError):
        decode_partial(b"not an archive")


async def _two_tiers(dep, split):
    """Center <- 2 tiers <- clients split between them; returns the center's result."""
    n = dep.num_clients
    tier_ids = [n, n + 1]
    tokens = {i: new_token() for i in range(n + 2)}
    center = dep.center(participants=2)
    async with CenterServer(center, TokenTable(tokens)) as top:
        edges = [dep.edge(len(group)) for group in split]
        async with (
            CenterServer(edges[0], TokenTable(tokens)) as s0,
            CenterServer(edges[1], TokenTable(tokens)) as s1,
        ):
            targets = [s0.target, s1.target]

            async def tier(k):
                async with GrpcLink(top.target, tier_ids[k], tokens[tier_ids[k]]) as link:
                    return await TierAggregator(link, edges[k], dep.size).run()

            async def client(cid, k):
                async with GrpcLink(targets[k], cid, tokens[cid]) as link:
                    return await dep.client(link, cid).run()

            async with asyncio.TaskGroup() as tg:
                main = tg.create_task(center.run(dep.initial_params()))
                for k, group in enumerate(split):
                    tg.create_task(tier(k))
                    for cid in group:
                        tg.create_task(client(cid, k))
    return main.result()


def test_two_tiers_with_full_participation_equal_flat_fedavg():
    cfg = load_config(overrides=[*SMALL, "rounds.clients_per_round=null"])
    dep = deployment(cfg)
    result = asyncio.run(_two_tiers(dep, [[0, 1, 2], [3, 4, 5]]))
    sim = run(cfg).simulation
    assert not result.rejections
    assert [len(r.outcome.accepted) for r in result.rounds] == [2, 2]
    # Same clients, same weights; only the float64 summation grouping differs.
    np.testing.assert_allclose(result.params, sim.params, rtol=1e-5, atol=1e-6)
    dense = dep.size * 4
    assert all(r.bytes_up > 2 * 8 * dep.size and r.bytes_down > 2 * dense for r in result.rounds)
