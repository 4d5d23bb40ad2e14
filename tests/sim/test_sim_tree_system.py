"""The tree driver's system figures: per-node ingress, device homes, contention."""

from pathlib import Path

import pytest

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.monitoring import RunStore
from fedstrata.monitoring.catalogue import federation_metrics

REGIONS = {"r0": {"e0": [0, 1, 2, 3], "e1": [4, 5, 6, 7]}, "r1": {"e2": [8, 9, 10, 11]}}


def _tree_run(tmp_path: Path, *extra: str) -> Path:
    cfg = load_config(
        overrides=[
            f"output.dir={tmp_path}", "output.report=false", "sim.workers=0",
            "rounds.rounds=2", "data.num_clients=12", "rounds.clients_per_round=null",
            "topology.mode=explicit", f"topology.regions={REGIONS}", *extra,
        ]
    )  # fmt: skip
    out = run(cfg)
    assert out.run_dir is not None
    return out.run_dir


@pytest.mark.parametrize("lan_mbps", [1000.0, 0.01])
def test_tree_records_node_ingress_device_homes_and_contention(
    tmp_path: Path, lan_mbps: float
) -> None:
    run_dir = _tree_run(tmp_path, f"topology.lan_mbps={lan_mbps}")
    with RunStore.open(run_dir) as store:
        rounds, nodes, devices = store.rounds(), store.tier_stats(), store.device_stats()
    homes = {c: e for r in REGIONS.values() for e, cs in r.items() for c in cs}
    assert {d.client_id: d.node for d in devices} == homes
    assert all(d.rounds_selected == 2 for d in devices)
    for m in rounds:
        mine = [n for n in nodes if n.round_idx == m.round_idx]
        assert {n.node for n in mine} == {"e0", "e1", "e2", "r0", "r1", "center"}
        edge_bytes = sum(n.ingress_bytes for n in mine if n.tier == "edge")
        assert m.tiers is not None
        assert edge_bytes == m.tiers.edge_ingress_bytes
        center = next(n for n in mine if n.node == "center")
        assert center.ingress_bytes == m.tiers.center_ingress_bytes
        assert center.clients == m.clients_completed
        assert 0 < center.seconds <= m.sim_round_s
    rows = federation_metrics(rounds)
    for row in rows:
        assert row["contention"] is not None
        assert 0.0 <= row["contention"] < 1.0
        assert row["device_utilization"] is not None
        assert 0.0 < row["device_utilization"] <= 1.0
    if lan_mbps < 1:  # twelve uploads squeezed through thin LANs into three edges
        assert all(row["contention"] > 0.1 for row in rows)  # type: ignore[operator]
