"""Issue 13 part 1: secure aggregation over gRPC between client agents and the center.

The rounds drive the sans-IO protocol state machines; the model equals the
simulator's bit for bit; a client that dies in any step is a protocol dropout whose
masks are recovered; a round below threshold is abandoned with nothing unmasked; and
the center never receives a single client's unmasked update."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest
from rthelpers import SMALL, run_federation

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.runtime import Center, deployment
from fedstrata.runtime.secagg_session import SecureRound
from fedstrata.runtime.secagg_wire import Phase, decode_masked
from fedstrata.secagg import ClientProtocol
from fedstrata.secagg.aggregator import ring_sum
from fedstrata.secagg.bitpack import pack_bits

SECAGG = [*SMALL, "secagg.enabled=true", "secagg.dropout_rate=0.0"]


class _Killed(Exception):
    """The client process died."""


class _DiesAt:
    """A client link that dies (the process is gone) when it reaches ``phase``."""

    def __init__(self, link, phase: Phase) -> None:
        self.link, self.phase = link, phase

    def session(self):
        return self.link.session()

    async def download(self, round_idx):
        return await self.link.download(round_idx)

    async def submit(self, *args):
        return await self.link.submit(*args)

    async def reconnect(self):
        await self.link.reconnect()

    async def secagg_step(self, round_idx, phase, data, **kw):
        if phase == self.phase:
            raise _Killed(f"killed at {Phase(phase).name}")
        return await self.link.secagg_step(round_idx, phase, data, **kw)


@pytest.fixture(scope="module")
def secagg_config():
    return load_config(overrides=SECAGG)


@pytest.fixture
def spy(monkeypatch):
    """Everything the center receives (steps, updates) and every client's plaintext
    protocol input ``[w q, w]`` (recorded where the client forms it)."""
    seen: dict[str, Any] = {"steps": [], "updates": [], "plain": {}, "rounds": []}
    step, submit, mask = SecureRound.step, Center.submit, ClientProtocol.masked_input

    async def record_step(self, header, phase, data):
        party = self.party.get(header.client_id)
        seen["steps"].append((header.round_idx, party, phase, data))
        return await step(self, header, phase, data)

    async def record_submit(self, header, chunks):
        seen["updates"].append(header)
        return await submit(self, header, chunks)

    def record_plain(self, vector):
        seen["plain"][self._round_id, self.client_id] = vector.copy()
        return mask(self, vector)

    def record_round(self, *args, **kw):
        init(self, *args, **kw)
        seen["rounds"].append(self)

    init = SecureRound.__init__
    monkeypatch.setattr(SecureRound, "step", record_step)
    monkeypatch.setattr(SecureRound, "__init__", record_round)
    monkeypatch.setattr(Center, "submit", record_submit)
    monkeypatch.setattr(ClientProtocol, "masked_input", record_plain)
    return seen


def test_secure_rounds_train_the_simulators_model_and_hide_every_update(secagg_config, spy):
    sim = run(secagg_config).simulation
    dep = deployment(secagg_config)
    result, _ = asyncio.run(run_federation(dep))
    assert [len(r.outcome.accepted) for r in result.rounds] == [5, 5]
    assert result.params.tobytes() == sim.params.tobytes()
    assert not spy["updates"]  # nothing reached the center in the clear
    cfg = spy["rounds"][0].agg.config
    plain = list(spy["plain"].values())
    inputs = [d for _, _, p, d in spy["steps"] if p is Phase.INPUT]
    assert len(inputs) == len(plain) == 10
    for data in inputs:
        masked = decode_masked(data, cfg.vector_length, cfg.modulus_bits).vector
        assert not any(np.array_equal(masked, p) for p in plain)
    packed = [pack_bits(p, cfg.modulus_bits) for p in plain]
    for *_, data in spy["steps"]:
        assert not any(p in data for p in packed)
    for rnd in spy["rounds"]:  # the center unmasked exactly the plaintext ring sum
        assert np.array_equal(rnd.total, _plain_sum(spy, rnd.rnd.round_idx, cfg.modulus_bits))


@pytest.mark.parametrize("phase", [Phase.KEYS, Phase.SHARES, Phase.INPUT, Phase.UNMASK])
def test_a_client_dying_in_any_step_is_a_dropout_and_the_round_completes(
    secagg_config, spy, phase
):
    dep = deployment(secagg_config)
    victim = int(dep.center().coordinator.select(0, np.arange(6))[0])

    def wrap(cid, link):
        return _DiesAt(link, phase) if cid == victim else link

    result, _ = asyncio.run(run_federation(dep, wrap=wrap, dies=_Killed))
    first = result.rounds[0].outcome
    input_sent = phase is Phase.UNMASK  # its masked input is in the sum
    assert (victim in first.accepted) == input_sent
    assert len(first.accepted) == (5 if input_sent else 4)
    rnd = spy["rounds"][0]
    assert rnd.abandoned is None
    assert len(rnd.steps[Phase.INPUT].received) == len(first.accepted)
    assert np.array_equal(rnd.total, _plain_sum(spy, 0, rnd.agg.config.modulus_bits))
    assert all(np.isfinite(result.params))
    assert not np.array_equal(result.params, dep.initial_params())


def _plain_sum(spy, round_idx, bits):
    """The ring sum of the plaintext inputs whose masked input reached the center."""
    sent = {party for r, party, p, _ in spy["steps"] if p is Phase.INPUT and r == round_idx}
    return ring_sum([spy["plain"][round_idx, party] for party in sorted(sent)], bits)


def test_a_round_below_threshold_is_abandoned_with_nothing_unmasked(secagg_config, spy, caplog):
    """Full graph of 5 (threshold 3) needs 4 masked inputs: with 3 clients dead before
    their input the protocol refuses to unmask; the model stays unchanged."""
    dep = deployment(secagg_config)
    victims = {int(c) for c in dep.center().coordinator.select(0, np.arange(6))[:3]}

    def wrap(cid, link):
        return _DiesAt(link, Phase.INPUT) if cid in victims else link

    with caplog.at_level(logging.WARNING, logger="fedstrata.runtime.secagg_session"):
        result, _ = asyncio.run(run_federation(dep, wrap=wrap, dies=_Killed))
    assert "secure aggregation abandoned, nothing unmasked" in caplog.text
    assert all(rnd.abandoned for rnd in spy["rounds"])
    assert not [p for _, _, p, _ in spy["steps"] if p is Phase.UNMASK]  # no share revealed
    assert result.params.tobytes() == dep.initial_params().tobytes()
