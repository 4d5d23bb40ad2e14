"""Issue 13 part 2: differential privacy over gRPC, the accountant at the center.

For the same configuration the runtime trains the simulator's model and reports its
ε; the budget stop ends the deployment cleanly with the run record marked stopped;
the accountant's state can be checkpointed and restored."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from rthelpers import SMALL, free_port, run_federation, tokens_for

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.monitoring import RunStore
from fedstrata.runtime import GrpcLink, TokenTable, deployment
from fedstrata.runtime.commands import run_center
from fedstrata.runtime.dp_center import DpCenter

DP = [*SMALL, "privacy.epsilon=2"]
SECURE = ["secagg.enabled=true", "secagg.dropout_rate=0.0"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["privacy.mechanism=central"],
        ["privacy.mechanism=central", *SECURE],
        ["privacy.mechanism=distributed", *SECURE],
    ],
    ids=["central", "central-secagg", "distributed-secagg"],
)
def test_the_runtime_spends_the_simulators_epsilon_on_its_model(overrides):
    cfg = load_config(overrides=[*DP, *overrides])
    sim = run(cfg).simulation
    result, _ = asyncio.run(run_federation(deployment(cfg)))
    assert result.params.tobytes() == sim.params.tobytes()
    got = [r.privacy for r in result.rounds]
    want = [m.privacy for m in sim.rounds]
    assert all(g is not None for g in got)
    assert [g.epsilon_spent for g in got] == [w.epsilon_spent for w in want]
    assert [g.noise_multiplier for g in got] == [w.noise_multiplier for w in want]
    assert 0 < got[-1].epsilon_spent <= 2.0


def test_the_budget_stop_ends_the_deployment_and_marks_the_run(tmp_path):
    """Planned for 2 rounds, asked for 3: the center stops before round 2 as the
    simulator does; clients get DONE; the run directory says why it stopped."""
    over = ["privacy.mechanism=central", "rounds.rounds=3", "privacy.planned_rounds=2"]
    cfg = load_config(overrides=[*DP, *over, "output.run_store=true", f"output.dir={tmp_path}"])
    sim_result = run(load_config(overrides=[*DP, *over])).simulation
    dep = deployment(cfg)
    tokens, port = tokens_for(6), free_port()

    async def client(cid):
        async with GrpcLink(f"127.0.0.1:{port}", cid, tokens[cid]) as link:
            return await dep.client(link, cid).run()

    async def main():
        async with asyncio.TaskGroup() as tg:
            center = tg.create_task(
                run_center(cfg, address=f"127.0.0.1:{port}", tokens=TokenTable(tokens),
                           tls=None, mutual=False)
            )  # fmt: skip
            for cid in range(6):
                tg.create_task(client(cid))
        return center.result()

    result = asyncio.run(asyncio.wait_for(main(), 60.0))
    assert len(result.rounds) == 2 == len(sim_result.rounds)
    assert result.stopped_reason is not None
    assert result.stopped_reason == sim_result.stopped_reason
    assert result.params.tobytes() == sim_result.params.tobytes()
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert "above the budget" in summary["stop_reason"]
    with RunStore.open(result.run_dir) as store:
        rounds = store.rounds()
    assert [r.round_idx for r in rounds] == [0, 1]
    assert rounds[-1].privacy is not None
    assert rounds[-1].privacy.epsilon_spent == result.rounds[-1].privacy.epsilon_spent


def test_the_accountant_state_round_trips_through_a_checkpoint():
    cfg = load_config(overrides=[*DP, "privacy.mechanism=central"])
    dep = deployment(cfg)
    first = dep.center().dp
    assert isinstance(first, DpCenter)
    for r in range(2):
        assert first.start(r) is None
        first.finish(r, 5)
    restored = dep.center().dp
    assert restored is not None
    assert restored.epsilon_spent == 0.0
    restored.load_state_dict(first.state_dict())
    assert restored.epsilon_spent == first.epsilon_spent > 0
    assert restored.start(2) == first.start(2)


class _SharedSink:
    """The center nodes' shared checkpoint store (one process)."""

    def __init__(self) -> None:
        self.blobs: dict[int, bytes] = {}

    def snapshot(self, round_num: int, blob: bytes) -> None:
        self.blobs[round_num] = blob

    def flush(self) -> None:
        pass

    def latest(self):
        return None if not self.blobs else (max(self.blobs), self.blobs[max(self.blobs)])


def _ports(n: int) -> list[str]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    out = [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    for s in socks:
        s.close()
    return out


def test_a_standby_center_spends_on_from_the_committed_epsilon(tmp_path):
    """Issue 15: ε spent is never lost at a failover. The standby restores the budget
    from the checkpoint's DP part and ends the run at the uninterrupted run's ε."""
    from fedstrata.runtime.client_link import Backoff
    from fedstrata.runtime.failover import CenterSnapshot
    from fedstrata.runtime.lease import LeaseTiming, SqlLease
    from fedstrata.runtime.relink import FailoverLink
    from fedstrata.runtime.standby import CenterNode, FailoverSettings

    cfg = load_config(overrides=[*DP, "privacy.mechanism=central", "rounds.rounds=5"])
    dep = deployment(cfg)
    plain, _ = asyncio.run(run_federation(dep))
    tokens, sink, addrs = tokens_for(dep.num_clients), _SharedSink(), _ports(2)
    url = str(tmp_path / "lease.sqlite")
    fast = FailoverSettings(lease=LeaseTiming(lease_s=0.6), poll_s=0.05, rejoin_timeout_s=1.0)

    def node(i: int) -> CenterNode:
        return CenterNode(
            dep, lease=SqlLease(url, "fed", f"c{i}"), sink=sink, address=addrs[i],
            tokens=TokenTable(tokens), settings=fast,
        )  # fmt: skip

    async def client(cid: int):
        link = FailoverLink(addrs, lambda t: GrpcLink(t, cid, tokens[cid]), connect_timeout_s=10)
        async with link:
            return await dep.client(link, cid, backoff=Backoff(8, 0.05, 0.3)).run()

    async def main():
        active = asyncio.create_task(node(0).run())
        while SqlLease(url, "fed", "probe").read() is None:
            await asyncio.sleep(0.01)
        standby = asyncio.create_task(node(1).run())
        clients = [asyncio.create_task(client(c)) for c in range(dep.num_clients)]
        while max(sink.blobs, default=-1) < 1:
            await asyncio.sleep(0.01)
        active.cancel()
        outcome = await standby
        await asyncio.gather(*clients)
        return outcome

    outcome = asyncio.run(asyncio.wait_for(main(), 120))
    assert outcome.epoch >= 2  # 2, or later if a loaded host's late renewals deposed it
    assert outcome.start_round >= 2
    resumed = CenterSnapshot.from_bytes(sink.blobs[outcome.start_round - 1])
    assert "dp" in resumed.parts  # the budget the standby started from
    eps = [r.privacy.epsilon_spent for r in outcome.result.rounds]
    want = [r.privacy.epsilon_spent for r in plain.rounds[outcome.start_round :]]
    assert eps == want
    assert eps[-1] == plain.rounds[-1].privacy.epsilon_spent > 0


def test_the_dp_part_refuses_what_is_not_a_budget():
    from fedstrata.errors import CheckpointCorrupt
    from fedstrata.runtime.dp_center import DpPart

    dep = deployment(load_config(overrides=[*DP, "privacy.mechanism=central"]))
    dp = dep.center().dp
    assert dp is not None
    for r in range(2):
        dp.start(r)
        dp.finish(r, 5)
    fresh = dep.center().dp
    assert fresh is not None
    DpPart(fresh).restore(DpPart(dp).save())
    assert fresh.epsilon_spent == dp.epsilon_spent > 0
    for bad in (b"not json", b"[1, 2]", b'{"events": "x"}'):
        with pytest.raises(CheckpointCorrupt):
            DpPart(fresh).restore(bad)
