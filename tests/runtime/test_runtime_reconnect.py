"""A client whose connection is cut mid-round is failed for it, reconnects, rejoins."""

import asyncio
import logging

import numpy as np
import pytest
from rthelpers import SMALL

from fedstrata.config import load_config
from fedstrata.errors import ConfigError, RunEndedError, TransportError
from fedstrata.runtime import Backoff, deployment

VICTIM = 2


class _CutOnce:
    """The victim's link: closes its channel during its first download."""

    def __init__(self, link):
        self.link, self.cut = link, False

    def session(self):
        return self.link.session()

    async def download(self, round_idx):
        if not self.cut:
            self.cut = True
            await self.link.close()  # the connection breaks mid-round
        return await self.link.download(round_idx)

    async def submit(self, *args):
        return await self.link.submit(*args)

    async def reconnect(self):
        await self.link.reconnect()


def test_cut_client_is_failed_then_reconnects_and_is_accepted_next_round(caplog):
    cfg = load_config(overrides=[*SMALL, "rounds.clients_per_round=null"])
    dep = deployment(cfg)
    delays: list[float] = []

    async def fake_sleep(s):
        delays.append(s)

    def wrap(cid, link):
        return _CutOnce(link) if cid == VICTIM else link

    from rthelpers import run_federation

    caplog.set_level(logging.WARNING)
    result, reports = asyncio.run(
        run_federation(dep, wrap=wrap, min_available=6, sleep=fake_sleep)
    )
    first, second = result.rounds
    assert first.outcome.failed == ((VICTIM, "disconnected during the round"),)
    assert first.outcome.applied
    assert len(first.outcome.accepted) == 5
    assert VICTIM in second.outcome.accepted
    assert len(second.outcome.accepted) == 6
    assert np.isfinite(result.params).all()
    assert len(delays) == 1
    assert 0.25 <= delays[0] <= 0.5
    assert reports[VICTIM].rounds == [1]
    assert len(reports[VICTIM].reconnects) == 1
    assert f"client {VICTIM} dropped: disconnected during the round" in caplog.text


def test_backoff_grows_exponentially_with_bounded_jitter():
    b = Backoff(attempts=5, base_s=1.0, max_s=5.0)
    rng = np.random.default_rng(0)
    for k, cap in enumerate([1.0, 2.0, 4.0, 5.0, 5.0]):
        d = b.delay_s(k, rng)
        assert cap / 2 <= d <= cap
    with pytest.raises(ConfigError, match="base_s"):
        Backoff(base_s=2.0, max_s=1.0)
    with pytest.raises(ConfigError, match="attempts"):
        Backoff(attempts=-1)


class _AlwaysDown:
    def __init__(self):
        self.reconnects = 0

    async def _fail(self):
        raise TransportError("center unreachable")
        yield  # pragma: no cover

    def session(self):
        return self._fail()

    async def reconnect(self):
        self.reconnects += 1


def test_reconnection_gives_up_after_the_bounded_attempts(small_deployment):
    link = _AlwaysDown()
    delays: list[float] = []

    async def fake_sleep(s):
        delays.append(s)

    agent = small_deployment.client(link, 0, backoff=Backoff(attempts=3), sleep=fake_sleep)
    with pytest.raises(TransportError, match="unreachable"):
        asyncio.run(agent.run())
    assert link.reconnects == 3
    assert len(delays) == 3
    assert delays[0] <= 0.5 < delays[2]  # grows: [0.25,0.5], [0.5,1], [1,2]


class _OverAfterCut:
    """The connection breaks before ``DONE`` arrives; the center's run then ends."""

    def __init__(self):
        self.sessions = 0

    def session(self):
        self.sessions += 1
        return self._first() if self.sessions == 1 else self._over()

    async def _first(self):
        raise TransportError("connection lost before DONE")
        yield  # pragma: no cover

    async def _over(self):
        raise RunEndedError("center refused the session (OUT_OF_RANGE): the run is over")
        yield  # pragma: no cover

    async def reconnect(self):
        pass


def test_reconnection_that_finds_the_run_over_ends_the_agent_cleanly(small_deployment):
    """CI failure on stop 22: a client cut off before its DONE searched for 2 minutes."""
    link = _OverAfterCut()

    async def fake_sleep(s):
        pass

    agent = small_deployment.client(link, 0, backoff=Backoff(attempts=3), sleep=fake_sleep)
    report = asyncio.run(agent.run())
    assert link.sessions == 2
    assert len(report.reconnects) == 1
    assert report.rounds == []


def test_first_session_refused_as_run_over_raises(small_deployment):
    link = _OverAfterCut()
    link.sessions = 1  # the first call already finds the run over
    agent = small_deployment.client(link, 0, backoff=Backoff(attempts=3))
    with pytest.raises(RunEndedError, match="the run is over"):
        asyncio.run(agent.run())


def test_finished_center_refuses_a_late_session_over_grpc_as_run_ended(small_deployment):
    from rthelpers import tokens_for

    from fedstrata.runtime import CenterServer, GrpcLink, TokenTable

    tokens = tokens_for(small_deployment.num_clients)
    center = small_deployment.center()
    center.finish()

    async def main():
        async with (
            CenterServer(center, TokenTable(tokens)) as server,
            GrpcLink(server.target, 0, tokens[0]) as link,
        ):
            async for _ in link.session():
                pass

    with pytest.raises(RunEndedError, match="the run is over"):
        asyncio.run(main())
