"""TLS, mutual TLS, bearer tokens and replay protection."""

import asyncio
import logging

import numpy as np
import pytest

from fedstrata.api import run
from fedstrata.core.payload import CodecId, Payload
from fedstrata.errors import ConfigError, ProtocolError
from fedstrata.runtime import GrpcLink, TlsFiles, TokenTable, make_dev_pki, new_token


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_dev_pki(tmp_path_factory.mktemp("pki"), range(6))


@pytest.fixture(scope="module")
def sim_params(small_config):
    return run(small_config).simulation.params


def _junk(size):
    return Payload(CodecId.DENSE_F32, b"", np.full(size, 1e3, np.float32).tobytes())


@pytest.mark.parametrize("mutual", [False, True])
def test_tls_federation_trains_the_simulators_model(
    small_deployment, federation, pki, sim_params, mutual
):
    result, _ = asyncio.run(federation(small_deployment, pki=pki, mutual=mutual))
    assert result.params.tobytes() == sim_params.tobytes()


def test_intruders_are_refused_with_a_logged_reason_and_change_nothing(
    small_deployment, federation, pki, sim_params, caplog
):
    tokens = {cid: new_token() for cid in range(6)}
    size = small_deployment.trainer.spec.size
    refusals = []

    async def intruder(target):
        attempts = [
            (0, "not-a-token", pki.client(0)),  # unauthenticated
            (1, tokens[0], pki.client(1)),  # another client's token
            (0, tokens[0], pki.client(1)),  # the right token with another's certificate
        ]
        for cid, token, tls in attempts:
            async with GrpcLink(target, cid, token, tls=tls) as link:
                with pytest.raises(ProtocolError) as err:
                    await link.submit(0, _junk(size), 10**6, {})
                refusals.append(str(err.value))

    with caplog.at_level(logging.WARNING, logger="fedstrata.runtime"):
        result, _ = asyncio.run(
            federation(small_deployment, tokens=tokens, pki=pki, mutual=True, intruder=intruder)
        )
    assert "UNAUTHENTICATED" in refusals[0]
    assert "unknown token" in refusals[0]
    assert "token of client 0 used by client 1" in refusals[1]
    assert "certificate" in refusals[2]
    logged = caplog.text
    assert "unknown token" in logged
    assert "token of client 0 used by client 1" in logged
    assert result.params.tobytes() == sim_params.tobytes()


class _Replayer:
    """Re-sends each update (duplicate) and last round's (stale), then opens the gate."""

    def __init__(self, link, gates):
        self.link, self.gates, self.last, self.replies = link, gates, None, []

    def session(self):
        return self.link.session()

    async def download(self, round_idx):
        return await self.link.download(round_idx)

    async def submit(self, round_idx, payload, num_examples, metrics):
        reply = await self.link.submit(round_idx, payload, num_examples, metrics)
        self.replies.append(await self.link.submit(round_idx, payload, num_examples, metrics))
        if self.last is not None:
            self.replies.append(await self.link.submit(*self.last))
        self.last = (round_idx, payload, num_examples, metrics)
        self.gates[round_idx].set()
        return reply


class _Gated(_Replayer):
    """Holds its submission until the replayer is done, so the round stays open."""

    async def submit(self, round_idx, payload, num_examples, metrics):
        await self.gates[round_idx].wait()
        return await self.link.submit(round_idx, payload, num_examples, metrics)


def test_replayed_and_duplicate_submissions_are_rejected(
    small_deployment, federation, sim_params, caplog
):
    coordinator = small_deployment.center().coordinator
    cohorts = [set(coordinator.select(r, np.arange(6)).tolist()) for r in range(2)]
    replayer, gated = sorted(cohorts[0] & cohorts[1])[:2]
    links = {}

    def wrap(cid, link):
        kind = {replayer: _Replayer, gated: _Gated}.get(cid)
        if kind is None:
            return link
        if "gates" not in links:
            links["gates"] = {0: asyncio.Event(), 1: asyncio.Event()}
        links[cid] = kind(link, links["gates"])
        return links[cid]

    with caplog.at_level(logging.WARNING, logger="fedstrata.runtime"):
        result, _ = asyncio.run(federation(small_deployment, wrap=wrap))
    replies = links[replayer].replies
    assert len(replies) == 3
    assert all(not accepted for accepted, _ in replies)
    assert f"duplicate submission from client {replayer} in round 0" in replies[0][1]
    assert f"duplicate submission from client {replayer} in round 1" in replies[1][1]
    assert "submission for round 0, open round is 1" in replies[2][1]
    assert "duplicate submission" in caplog.text
    assert all(len(r.outcome.accepted) == 5 for r in result.rounds)
    assert result.params.tobytes() == sim_params.tobytes()


def test_token_table_rejects_shared_and_empty_tokens():
    with pytest.raises(ConfigError, match="reuses"):
        TokenTable({0: "a", 1: "a"})
    with pytest.raises(ConfigError, match="empty token"):
        TokenTable({0: ""})
    table = TokenTable({3: "x", 4: "y"})
    assert table.client_for("y") == 4
    assert table.client_for("z") is None


def test_tls_files_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="ca_cert"):
        TlsFiles(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="both cert and key"):
        TlsFiles(tmp_path / "missing.pem", cert=tmp_path / "c.pem")
