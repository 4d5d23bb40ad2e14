"""Chaos with real processes: the active center, an edge and a client are SIGKILLed.

Two center nodes (active + standby, lease in SQLite, checkpoints on disk), two edges
and a spare edge, four clients: each an OS process, all over mutual TLS on loopback.
After round 1 a client is killed, after round 2 an edge, after round 3 the active
center. The standby takes over from the newest checkpoint, the dead edge's clients
re-home to the spare, the run completes, and every update a center acknowledged is
in the committed history.

On a loaded machine a live center's lease renewals can come late (lease 1 s here) and
it deposes itself; it then follows again as a standby (``CenterNode.run``), so the
center left after the SIGKILL can be deposed and still finish the run
(``result.deposed`` counts such terms). Before, the deposed node exited and no center
remained: seen under load here (the surviving center logged "lease ... lost"), and the
likely cause of this test failing 2 of 13 runs on a loaded machine.
"""

from __future__ import annotations

import socket

import pytest

from fedstrata.runtime.chaos import ChaosSpec
from fedstrata.runtime.chaos_run import ChaosPlan, run_chaos

OVERRIDES = (
    "output.run_store=false",
    "sim.workers=0",
    "data.num_clients=4",
    "rounds.rounds=10",
    "rounds.clients_per_round=null",
    "rounds.min_clients=3",  # the survivors: rounds wait for the dead edge's clients
    "rounds.deadline_s=30",
    "model.kind=logreg",
    "client.steps=2",
    "client.epochs=null",
)


def _addresses(n: int) -> tuple[str, ...]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    out = tuple(f"127.0.0.1:{s.getsockname()[1]}" for s in socks)
    for s in socks:
        s.close()
    return out


@pytest.mark.slow
def test_the_federation_survives_killed_center_edge_and_client(tmp_path):
    a = _addresses(5)
    spec = ChaosSpec(
        OVERRIDES, str(tmp_path), centers=a[:2], edges=a[2:4], spares=a[4:],
        groups=((0, 1), (2, 3)), lease_s=1.0,
    )  # fmt: skip
    plan = ChaosPlan(
        kill_clients=1, kill_edge=True, kill_center=True,
        client_round=1, edge_round=2, center_round=3, seed=3, limit_s=120.0,
    )  # fmt: skip
    result = run_chaos(spec, plan)
    assert result.completed, result  # the repr names every figure, deposals included
    assert result.killed_centers == 1
    assert len(result.killed_edges) == 1
    assert len(result.killed_clients) == 1
    assert len(result.center_failover_s) == 1  # the standby served after the kill
    orphans = set(spec.groups[result.killed_edges[0]]) - set(result.killed_clients)
    assert orphans
    assert len(result.edge_failover_s) == 1
    assert result.acked > 0
    assert result.acked_lost == 0
    assert 0 < result.availability < 1
