"""FailoverLink: the first of several parents that serves; address lists."""

from __future__ import annotations

import asyncio
import socket

import pytest
from rthelpers import tokens_for

from fedstrata.errors import ConfigError
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable
from fedstrata.runtime.commands import parents
from fedstrata.runtime.relink import FailoverLink, NoTargetError


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens


def test_address_lists_are_split_in_order():
    assert parents("a:1") == ["a:1"]
    assert parents(" a:1, b:2 ,c:3") == ["a:1", "b:2", "c:3"]
    with pytest.raises(ConfigError, match="host:port"):
        parents(" , ")


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="at least one target"):
        FailoverLink([], lambda t: GrpcLink(t, 0, "x"))
    with pytest.raises(ConfigError, match="durations"):
        FailoverLink(["a:1"], lambda t: GrpcLink(t, 0, "x"), probe_s=0)


def test_a_dead_target_is_skipped_and_the_live_one_serves(small_deployment):
    dep = small_deployment
    tokens = tokens_for(dep.num_clients)

    async def main():
        center = dep.center(min_available=dep.num_clients)
        async with CenterServer(center, TokenTable(tokens)) as server:
            dead = _dead_address()

            async def client(cid):
                def make(target):
                    return GrpcLink(target, cid, tokens[cid])

                async with FailoverLink([dead, server.target], make, connect_timeout_s=20) as link:
                    report = await dep.client(link, cid).run()
                    return report, link

            run = asyncio.create_task(center.run(dep.initial_params()))
            out = await asyncio.gather(*(client(c) for c in range(dep.num_clients)))
            return await run, out

    result, out = asyncio.run(main())
    assert len(result.rounds) == dep.config.rounds.rounds
    assert not result.rejections
    per_round = dep.config.rounds.clients_per_round
    assert [len(r.outcome.accepted) for r in result.rounds] == [per_round] * len(result.rounds)
    for report, link in out:
        assert link.target == link.targets[1]
        assert [s.target for s in link.switches] == [link.targets[1]]
        assert set(report.rounds) <= set(range(dep.config.rounds.rounds))


def test_no_target_serving_is_a_no_target_error():
    async def main():
        link = FailoverLink(
            [_dead_address(), _dead_address()], lambda t: GrpcLink(t, 0, "x"),
            connect_timeout_s=0.5, pause_s=0.05,
        )  # fmt: skip
        async with link:
            async for _ in link.session():
                pass

    with pytest.raises(NoTargetError, match="accepted a connection"):
        asyncio.run(main())


class _FakeLink:
    """A parent that always connects; records each session's Hello count."""

    def __init__(self, target, hellos):
        self.target, self.hellos, self.run_id, self.client_id = target, hellos, "", 9

    async def __aenter__(self):
        return self

    async def probe(self, timeout_s):
        return True

    async def close(self):
        pass

    async def session(self, live_clients=0, profile=None):
        self.hellos.append(live_clients)
        return
        yield

    async def report_live(self, live_clients):
        self.hellos.append(("report", live_clients))


def test_a_tier_report_made_while_searching_goes_in_the_next_hello():
    hellos = []

    async def main():
        async with FailoverLink(["a:1"], lambda t: _FakeLink(t, hellos)) as link:
            await link.report_live(4)  # no session yet: kept
            async for _ in link.session(live_clients=1):
                pass
            await link.report_live(5)  # a session is open: sent
            await link.reconnect()
            async for _ in link.session(live_clients=5):
                pass

    asyncio.run(main())
    assert hellos == [4, ("report", 5), 5]
