"""Issue 11: a deployment never hangs on a dead peer; every wait has a deadline."""

import asyncio
import contextlib
import logging

import pytest
from rthelpers import SMALL, free_port, run_federation, tokens_for

from fedstrata.config import load_config
from fedstrata.errors import TransportError
from fedstrata.runtime import (
    Backoff,
    CenterServer,
    GrpcLink,
    TierAggregator,
    TokenTable,
    deployment,
)

LIMIT_S = 60.0  # what a hang runs into instead of blocking the suite


class _Killed(Exception):
    pass


class _DiesInRound:
    """The victim's link: gone after downloading the model of ``round_idx``."""

    def __init__(self, link, round_idx):
        self.link, self.round_idx = link, round_idx

    def session(self):
        return self.link.session()

    async def download(self, round_idx):
        payload = await self.link.download(round_idx)
        if round_idx == self.round_idx:
            raise _Killed
        return payload

    async def submit(self, *args):
        return await self.link.submit(*args)

    async def reconnect(self):  # pragma: no cover - the victim dies instead
        await self.link.reconnect()


def test_center_finishes_every_round_after_losing_a_client_mid_round(caplog):
    """Issue 11 defect 1: kill one client of three mid-round; the center goes on."""
    cfg = load_config(
        overrides=[
            *SMALL,
            "data.num_clients=3",
            "rounds.rounds=3",
            "rounds.clients_per_round=null",
        ]
    )
    dep = deployment(cfg)

    def wrap(cid, link):
        return _DiesInRound(link, 0) if cid == 1 else link

    caplog.set_level(logging.INFO, logger="fedstrata.runtime")
    result, _ = asyncio.run(
        asyncio.wait_for(run_federation(dep, wrap=wrap, dies=_Killed), LIMIT_S)
    )
    assert [len(r.outcome.accepted) for r in result.rounds] == [2, 2, 2]
    assert result.rounds[0].outcome.failed == ((1, "disconnected during the round"),)


def test_first_round_starts_with_the_quorum_after_the_start_timeout(caplog):
    """Issue 11 defect 1: a participant that never comes delays round 0 only by the
    start timeout; the wait names whom it waits for."""
    cfg = load_config(overrides=[*SMALL, "data.num_clients=3", "rounds.clients_per_round=null"])
    dep = deployment(cfg)
    tokens = tokens_for(3)
    center = dep.center(min_available=2, start_timeout_s=0.5)

    async def main():
        async with CenterServer(center, TokenTable(tokens)) as server:

            async def client(cid):
                async with GrpcLink(server.target, cid, tokens[cid]) as link:
                    return await dep.client(link, cid).run()

            async with asyncio.TaskGroup() as tg:
                run = tg.create_task(center.run(dep.initial_params()))
                for cid in (0, 2):  # client 1 never comes
                    tg.create_task(client(cid))
        return run.result()

    caplog.set_level(logging.INFO, logger="fedstrata.runtime")
    result = asyncio.run(asyncio.wait_for(main(), LIMIT_S))
    assert [sorted(r.outcome.accepted) for r in result.rounds] == [[0, 2], [0, 2]]
    assert "waiting up to 0.5 s for 3 participants" in caplog.text
    assert "round 0: start timeout: " in caplog.text
    assert " of 3 participants connected" in caplog.text


def test_a_quorum_above_the_live_clients_waits_and_says_so(caplog):
    """Issue 11 defect 1: rounds.min_clients is the quorum; the wait is logged."""
    cfg = load_config(
        overrides=[
            *SMALL,
            "data.num_clients=3",
            "rounds.clients_per_round=null",
            "rounds.min_clients=3",
        ]
    )
    center = deployment(cfg).center(start_timeout_s=0.2)
    assert center.settings.min_available == cfg.rounds.min_clients == 3

    async def main():
        waiters = [asyncio.ensure_future(anext(center.session(cid))) for cid in (0, 1)]
        await asyncio.sleep(0)  # the sessions register, then wait for a task
        ok = await center.roster.gather(0, expected=3, quorum=3, timeout_s=0.2, limit_s=0.5)
        for waiter in waiters:
            waiter.cancel()
        return ok

    caplog.set_level(logging.INFO, logger="fedstrata.runtime")
    assert asyncio.run(main()) is False
    assert "waiting for a quorum of 3 reachable clients (2 now; 0:1, 1:1)" in caplog.text
    assert "no quorum after 0.5 s" in caplog.text


def test_session_to_a_dead_server_fails_within_the_connect_timeout(caplog):
    """Issue 11 defects 3 and 17: opening a session has a deadline, and the attempt
    is logged."""
    port = free_port()

    async def main():
        async with GrpcLink(f"127.0.0.1:{port}", 0, "t", connect_timeout_s=0.3) as link:
            async for _ in link.session():
                pass  # pragma: no cover - nothing listens

    caplog.set_level(logging.INFO, logger="fedstrata.runtime")
    with pytest.raises(TransportError, match=r"no connection to .* within 0\.3 s"):
        asyncio.run(asyncio.wait_for(main(), LIMIT_S))
    assert f"client 0: connecting to 127.0.0.1:{port} (waiting up to 0.3 s)" in caplog.text


def test_client_of_a_dead_server_gives_up_after_its_attempts(small_deployment, caplog):
    """Issue 11 defects 3 and 17: each attempt and each backoff is logged; after
    ``attempts`` failures the agent raises a clear error."""
    port = free_port()
    delays: list[float] = []

    async def fake_sleep(s):
        delays.append(s)

    async def main():
        async with GrpcLink(f"127.0.0.1:{port}", 0, "t", connect_timeout_s=0.2) as link:
            agent = small_deployment.client(link, 0, backoff=Backoff(attempts=2), sleep=fake_sleep)
            await agent.run()

    caplog.set_level(logging.INFO, logger="fedstrata.runtime")
    with pytest.raises(TransportError, match="client 0: gave up after 2 reconnection attempts"):
        asyncio.run(asyncio.wait_for(main(), LIMIT_S))
    assert len(delays) == 2
    assert caplog.text.count("connecting to 127.0.0.1") == 3
    assert "reconnecting in" in caplog.text
    assert "(attempt 2 of 2)" in caplog.text


def test_tiers_start_rounds_only_once_their_clients_are_reachable():
    """Issue 11 defect 7: tiers whose clients come late do not burn rounds."""
    # the clients come 3 s late, past a 2 s deadline: a round opened before they were
    # reachable would time out empty; 2 s (not 0.5 s) leaves a loaded machine time to
    # finish the real rounds inside their deadline
    cfg = load_config(overrides=[*SMALL, "rounds.clients_per_round=null", "rounds.deadline_s=2"])
    dep = deployment(cfg)
    split = [[0, 1, 2], [3, 4, 5]]
    tokens = tokens_for(8)

    async def main():
        center = dep.center(participants=2)
        edges = [dep.edge(len(group)) for group in split]
        async with (
            CenterServer(center, TokenTable(tokens)) as top,
            CenterServer(edges[0], TokenTable(tokens)) as s0,
            CenterServer(edges[1], TokenTable(tokens)) as s1,
        ):

            async def tier(k):
                async with GrpcLink(top.target, 6 + k, tokens[6 + k]) as link:
                    return await TierAggregator(link, edges[k], dep.size).run()

            async def client(cid, target):
                await asyncio.sleep(3.0)  # well past the round deadline
                async with GrpcLink(target, cid, tokens[cid]) as link:
                    return await dep.client(link, cid).run()

            async with asyncio.TaskGroup() as tg:
                run = tg.create_task(center.run(dep.initial_params()))
                for k, target in enumerate((s0.target, s1.target)):
                    tg.create_task(tier(k))
                    for cid in split[k]:
                        tg.create_task(client(cid, target))
        return run.result()

    result = asyncio.run(asyncio.wait_for(main(), LIMIT_S))
    assert [len(r.outcome.accepted) for r in result.rounds] == [2, 2]


def test_tier_left_without_clients_leaves_and_registers_again_when_one_connects(caplog):
    """Issue 11 defects 1 and 7: a tier whose only client died does not hold the
    center (it leaves its parent), and registers again once a client is back."""
    cfg = load_config(overrides=[*SMALL, "data.num_clients=1", "rounds.clients_per_round=null"])
    dep = deployment(cfg)
    tokens = tokens_for(2)

    async def main():
        center, edge = dep.center(participants=1), dep.edge(1)
        async with (
            CenterServer(center, TokenTable(tokens)) as top,
            CenterServer(edge, TokenTable(tokens)) as below,
        ):

            async def tier():
                async with GrpcLink(top.target, 1, tokens[1]) as link:
                    return await TierAggregator(link, edge, dep.size).run()

            async def client():
                with contextlib.suppress(_Killed):  # its channel closes: no client left
                    async with GrpcLink(below.target, 0, tokens[0]) as link:
                        await dep.client(_DiesInRound(link, 0), 0).run()
                await center.roster.wait(lambda: center.connected == 0, None)  # tier left
                async with GrpcLink(below.target, 0, tokens[0]) as link:
                    return await dep.client(link, 0).run()

            async with asyncio.TaskGroup() as tg:
                run = tg.create_task(center.run(dep.initial_params()))
                tg.create_task(tier())
                back = tg.create_task(client())
        return run.result(), back.result()

    caplog.set_level(logging.INFO, logger="fedstrata.runtime")
    result, report = asyncio.run(asyncio.wait_for(main(), LIMIT_S))
    first, second = result.rounds
    assert first.outcome.accepted == ()
    assert [cid for cid, _ in first.outcome.failed] == [1]
    assert second.outcome.accepted == (1,)
    assert report.rounds == [1]
    assert "tier: no clients left; leaving the parent" in caplog.text


def test_a_report_that_overtakes_its_session_counts_when_the_session_joins():
    from fedstrata.runtime.liveness import Roster

    roster = Roster()
    roster.report(6, 2)  # a reconnecting tier's report, before its Hello arrived
    assert roster.reachable == 0
    roster.join(6, 1)  # the Hello was built earlier: the report is newer
    assert roster.reach() == {6: 2}
    roster.leave(6)
    roster.join(6, 3)  # consumed: a later session starts from its own Hello
    assert roster.reach() == {6: 3}
