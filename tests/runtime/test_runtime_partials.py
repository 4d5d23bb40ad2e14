"""Re-compressed partial aggregates between tiers (issue 13 part 3): the simulator's
hop encoding on the wire, not a float64 sum."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from rthelpers import SMALL

from fedstrata.aggregation import MeanState, MetricSums, WeightedMean
from fedstrata.api import run
from fedstrata.compress import ChainCodec, resolve_spec
from fedstrata.config import load_config
from fedstrata.core.context import RoundContext
from fedstrata.core.state import MemoryStateStore
from fedstrata.errors import PayloadError
from fedstrata.runtime import CenterServer, GrpcLink, TierAggregator, TokenTable, deployment
from fedstrata.runtime import new_token as token
from fedstrata.runtime.partials import (
    CompressedPartial,
    encode_compressed_partial,
    merge_compressed,
    read_partial,
)
from fedstrata.sim.tree_node import MeanTier


def _partial(size: int = 500, seed: int = 0) -> MeanState:
    rng = np.random.default_rng(seed)
    metrics = MetricSums()
    metrics.add({"train_loss": 0.5}, 3.0)
    return MeanState(rng.normal(size=size) * 3.0, total_weight=3.0, count=2, metrics=metrics)


def _codec(size: int, spec: str = "topk1_int8_ef") -> ChainCodec:
    s = resolve_spec(spec)
    store = MemoryStateStore() if s.error_feedback else None
    return ChainCodec(s, size, store, state_key="partial_ef")


@pytest.mark.parametrize("spec", ["int8", "topk1_int8_ef"])
def test_the_wire_carries_the_simulators_hop_and_merges_like_it(spec):
    """Two rounds (error feedback carried) of one sender: the payload bytes equal the
    simulator's MeanTier hop, and the parent's state after merging equals its merge."""
    size, sender = 500, 7
    wire_codec, sim_codec = _codec(size, spec), _codec(size, spec)
    tier = MeanTier(WeightedMean(), codec=sim_codec, root_seed=11)
    for sub in range(2):
        partial = _partial(size, sub)
        ctx = RoundContext(sub, 11).for_client(sender)
        got = read_partial(encode_compressed_partial(partial, wire_codec, ctx))
        hop = tier.send(partial, sender, sub)
        assert isinstance(got, CompressedPartial)
        assert hop.payload is not None
        assert got.payload.to_bytes() == hop.payload.to_bytes()
        ours = merge_compressed(_partial(size, 9), got, sender)
        theirs = tier.merge(_partial(size, 9), hop)
        assert isinstance(theirs, MeanState)
        assert ours.weighted_sum.tobytes() == theirs.weighted_sum.tobytes()
        assert (ours.count, ours.total_weight) == (theirs.count, theirs.total_weight)
        assert ours.metrics.means() == theirs.metrics.means()


def test_an_exact_partial_still_reads_as_a_mean_state_and_garbage_is_refused():
    from fedstrata.runtime import encode_partial

    state = _partial()
    back = read_partial(encode_partial(state))
    assert isinstance(back, MeanState)
    assert back.weighted_sum.tobytes() == state.weighted_sum.tobytes()
    with pytest.raises(PayloadError):
        read_partial(b"not an archive")
    data = encode_compressed_partial(state, _codec(state.size), RoundContext(0, 0).for_client(1))
    with pytest.raises(PayloadError):
        read_partial(data[: len(data) // 2])


async def _two_tiers(dep, split, codec_spec):
    n = dep.num_clients
    tier_ids = [n, n + 1]
    tokens = {i: token() for i in range(n + 2)}
    center = dep.center(participants=2)
    async with CenterServer(center, TokenTable(tokens)) as top:
        edges = [dep.edge(len(group)) for group in split]
        async with (
            CenterServer(edges[0], TokenTable(tokens)) as s0,
            CenterServer(edges[1], TokenTable(tokens)) as s1,
        ):
            targets = [s0.target, s1.target]

            async def tier(k):
                codec = dep.partial_codec(resolve_spec(codec_spec)) if codec_spec else None
                async with GrpcLink(top.target, tier_ids[k], tokens[tier_ids[k]]) as link:
                    agg = TierAggregator(link, edges[k], dep.size, codec=codec, tier_id=k)
                    return await agg.run()

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


def test_tiers_send_compressed_partials_over_the_wire():
    cfg = load_config(overrides=[*SMALL, "rounds.clients_per_round=null"])
    dep = deployment(cfg)
    exact = asyncio.run(_two_tiers(dep, [[0, 1, 2], [3, 4, 5]], None))
    packed = asyncio.run(_two_tiers(dep, [[0, 1, 2], [3, 4, 5]], "int8"))
    sim = run(cfg).simulation
    assert not packed.rejections
    assert [len(r.outcome.accepted) for r in packed.rounds] == [2, 2]
    for small, big in zip(packed.rounds, exact.rounds, strict=True):
        assert small.bytes_up * 2 < big.bytes_up  # int8 means vs float64 sums (+ .npz framing)
    # int8 rounding of two edge means: close to flat FedAvg, not equal
    step = np.abs(sim.params - dep.initial_params()).max()
    assert np.abs(packed.params - sim.params).max() < 0.05 * step
    assert packed.params.tobytes() != exact.params.tobytes()
