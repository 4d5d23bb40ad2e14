"""A client that dies mid-round is failed by the center; training completes."""

import asyncio

import numpy as np


class _Killed(Exception):
    pass


class _DiesAfterDownload:
    def __init__(self, link):
        self.link = link

    def session(self):
        return self.link.session()

    async def download(self, round_idx):
        await self.link.download(round_idx)
        raise _Killed  # gone between download and submit

    async def submit(self, *args):  # pragma: no cover - never reached
        raise AssertionError


def test_client_dying_mid_round_is_failed_and_the_run_completes(small_deployment, federation):
    coordinator = small_deployment.center().coordinator
    victim = int(coordinator.select(0, np.arange(6))[0])

    def wrap(cid, link):
        return _DiesAfterDownload(link) if cid == victim else link

    result, _ = asyncio.run(federation(small_deployment, wrap=wrap, min_available=5, dies=_Killed))
    first, second = result.rounds
    assert first.outcome.failed == ((victim, "disconnected during the round"),)
    assert len(first.outcome.accepted) == 4
    assert first.outcome.applied
    assert victim not in second.outcome.accepted
    assert len(second.outcome.accepted) == 5  # the 5 still connected
    # Issue 16 part 1: the center records the failure and its recovery for the metrics
    system = first.system
    assert system is not None
    assert system.devices == 5
    assert system.failure_at_s is not None
    assert second.system is not None
    assert second.system.failure_at_s is None
    assert second.system.first_accept_s is not None
    if system.recovered_at_s is None:  # every other update came before the failure
        assert second.system.first_accept_s > system.failure_at_s
    else:
        assert system.recovered_at_s >= system.failure_at_s
