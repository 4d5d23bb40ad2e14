"""The TCP latency probe, on loopback."""

import asyncio

import numpy as np
import pytest

from fedstrata.errors import TransportError
from fedstrata.runtime.probe import ProbeServer, probe_link, probe_matrix
from fedstrata.sim.network import LatencyMatrix


async def _with_servers(n, body):
    servers = [ProbeServer() for _ in range(n)]
    for s in servers:
        await s.__aenter__()
    try:
        return await body([f"127.0.0.1:{s.port}" for s in servers])
    finally:
        for s in servers:
            await s.__aexit__(None, None, None)


def test_matrix_between_three_hosts_round_trips_through_the_file(tmp_path):
    names = ["0", "1", "center"]
    matrix, mbps = asyncio.run(_with_servers(3, lambda hosts: probe_matrix(hosts, names)))
    off = ~np.eye(3, dtype=bool)
    assert matrix.ids == tuple(names)
    assert (matrix.latency_ms[off] > 0).all()
    assert (matrix.latency_ms[off] < 100).all()  # loopback
    assert (np.diag(matrix.latency_ms) == 0).all()
    assert (mbps[off] > 1).all()
    path = tmp_path / "latency.csv"
    matrix.save(path)
    assert LatencyMatrix.load(path).ids == matrix.ids


def test_link_probe_and_unreachable_host():
    result = asyncio.run(_with_servers(1, lambda hosts: probe_link(hosts[0], pings=3)))
    assert result.rtt_ms > 0
    assert result.mbps > 0
    with pytest.raises(TransportError, match="failed"):
        asyncio.run(probe_link("127.0.0.1:1", timeout_s=2))
