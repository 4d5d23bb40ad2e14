"""Downlink compression over gRPC (issue 13 part 3): deltas since the client's version,
the full model as fallback, the simulator's model and bytes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from rthelpers import SMALL

from fedstrata.api import run
from fedstrata.compress import resolve_spec
from fedstrata.compress.downlink import DownlinkMessage
from fedstrata.config import load_config
from fedstrata.core.context import RoundContext
from fedstrata.errors import PayloadError
from fedstrata.runtime import (
    CenterServer,
    GrpcLink,
    TierAggregator,
    TokenTable,
    deployment,
    new_token,
)
from fedstrata.runtime.downlink import DownlinkAsk, DownlinkReplica, DownlinkServer

# 4 rounds of 3 of 6 clients: some clients skip rounds, and with history 1 a client
# two or more versions behind gets the full model (the fallback)
DOWNLINK = [
    *SMALL,
    "rounds.rounds=4",
    "rounds.clients_per_round=3",
    "downlink.preset=int8",
    "downlink.history=1",
]


@pytest.mark.parametrize("extra", [[], ["compression.preset=topk1_int8_ef"]])
def test_downlink_model_and_bytes_equal_the_simulators(federation, extra):
    config = load_config(overrides=[*DOWNLINK, *extra])
    sim = run(config).simulation
    dep = deployment(config)
    result, reports = asyncio.run(federation(dep))
    assert not result.rejections
    assert result.params.tobytes() == sim.params.tobytes()
    for got, want in zip(result.rounds, sim.rounds, strict=True):
        assert got.bytes_down == want.bytes_down
        assert got.bytes_up == want.bytes_up
    full = DownlinkServer(config.downlink.spec(), 1)
    full.start(dep.initial_params())
    full_bytes = len(full.message(DownlinkAsk(None)))
    downs = [r.bytes_down for r in result.rounds]
    assert downs[0] == 3 * full_bytes  # round 0: nobody holds a model
    assert min(downs[1:]) < 3 * full_bytes  # deltas after that
    assert max(downs[1:]) > min(downs[1:])  # and some full-model fallbacks
    assert sum(len(rep.rounds) for rep in reports) == 12


def _server(history: int = 2) -> tuple[DownlinkServer, np.ndarray]:
    params = np.linspace(-1, 1, 1000, dtype=np.float32)
    server = DownlinkServer(resolve_spec("int8"), history)
    server.start(params)
    return server, params


def test_replica_follows_the_servers_versions_bit_for_bit():
    server, params = _server()
    client = DownlinkReplica()
    rng = np.random.default_rng(0)
    for r in range(4):
        got = client.apply(server.message(client.ask()), params.size)
        assert got.tobytes() == server.encoder.replica.tobytes()
        params = params + rng.normal(0, 0.01, params.size).astype(np.float32)
        server.publish(params, RoundContext(r, 0))
    assert client.version == 3
    message = DownlinkMessage.from_bytes(server.message(client.ask()))
    assert message.base_version == 3
    assert len(message.payloads) == 1  # one delta


def test_a_client_too_far_behind_or_unknown_gets_the_full_model():
    server, params = _server(history=1)
    for r in range(3):
        server.publish(params + r + 1, RoundContext(r, 0))
    assert DownlinkMessage.from_bytes(server.message(DownlinkAsk(1))).base_version is None
    assert DownlinkMessage.from_bytes(server.message(DownlinkAsk(2))).base_version == 2
    # a version the center never published (a client of an old run): the full model
    assert DownlinkMessage.from_bytes(server.message(DownlinkAsk(99))).base_version is None


def test_a_malformed_message_resets_the_replica():
    server, params = _server()
    client = DownlinkReplica()
    client.apply(server.message(client.ask()), params.size)
    with pytest.raises(PayloadError):
        client.apply(b"\x00" * 7, params.size)
    assert client.ask() == DownlinkAsk(None)  # the next download is the full model


class _AsksDense:
    """A client link that asks for the dense model although the run compresses."""

    def __init__(self, link):
        self.link = link

    def session(self):
        return self.link.session()

    async def download_downlink(self, round_idx, ask):
        return (await self.link.download(round_idx)).to_bytes()

    async def submit(self, *args):
        return await self.link.submit(*args)


def test_a_dense_download_in_a_compressed_run_is_refused_with_its_reason(federation):
    dep = deployment(load_config(overrides=[*SMALL, "downlink.preset=int8"]))
    result, reports = asyncio.run(
        federation(dep, wrap=lambda cid, link: _AsksDense(link) if cid == 0 else link)
    )
    reasons = {why for _, cid, why in result.rejections if cid == 0}
    assert reasons == {"downlink compression is on in this run"}
    assert not reports[0].rounds  # it trained nothing
    assert all(0 not in r.outcome.accepted for r in result.rounds)


async def _two_tiers(dep, split):
    """Center <- 2 tiers <- clients; the center's result and each tier's report."""
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
                tiers = [tg.create_task(tier(k)) for k in range(len(split))]
                for k, group in enumerate(split):
                    for cid in group:
                        tg.create_task(client(cid, k))
    return main.result(), [t.result() for t in tiers]


def test_tiers_relay_the_deltas_each_client_would_get_from_the_center():
    """Full participation through two tiers: each tier relays its parent's messages and
    answers its clients from the deltas it received, so the clients' downloads are,
    byte for byte, the flat simulator's; the tiers themselves get deltas too."""
    config = load_config(overrides=[
        *SMALL, "rounds.rounds=3", "rounds.clients_per_round=null", "downlink.preset=int8",
    ])  # fmt: skip
    dep = deployment(config)
    result, tiers = asyncio.run(_two_tiers(dep, [[0, 1, 2], [3, 4, 5]]))
    sim = run(config).simulation
    assert not result.rejections
    assert [len(r.outcome.accepted) for r in result.rounds] == [2, 2, 2]
    for r, want in enumerate(sim.rounds):
        assert sum(t.rounds[r].bytes_down for t in tiers) == want.bytes_down
    full = DownlinkServer(config.downlink.spec(), config.downlink.history)
    full.start(dep.initial_params())
    full_bytes = len(full.message(DownlinkAsk(None)))
    assert result.rounds[0].bytes_down == 2 * full_bytes  # the tiers' first model
    assert all(r.bytes_down < 2 * full_bytes for r in result.rounds[1:])  # then deltas
    np.testing.assert_allclose(result.params, sim.params, rtol=1e-5, atol=1e-6)
