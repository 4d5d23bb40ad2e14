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
from fedstrata.errors import ConfigError, PayloadError
from fedstrata.runtime import deployment
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


def test_tiers_refuse_downlink_compression_with_a_reason():
    dep = deployment(load_config(overrides=[*SMALL, "downlink.preset=int8"]))
    with pytest.raises(ConfigError, match=r"downlink compression .* aggregator tiers"):
        dep.edge(2)
    with pytest.raises(ConfigError, match="aggregator tiers"):
        dep.center(participants=2)
