"""Issue 11 defect 2: ``serve center`` writes the simulator's run directory."""

import asyncio
import json

import numpy as np
import pytest
from rthelpers import SMALL, free_port, tokens_for

from fedstrata.config import load_config
from fedstrata.monitoring import RunStore
from fedstrata.monitoring.catalogue import federation_metrics
from fedstrata.runtime import GrpcLink, TokenTable, deployment
from fedstrata.runtime.commands import run_center

LIMIT_S = 60.0


def test_serve_center_writes_its_run_directory_as_rounds_complete(tmp_path):
    """Issue 11 defect 2: config, per-round metrics, model, summary and report."""
    overrides = [*SMALL, "output.run_store=true", f"output.dir={tmp_path}", "name=edge-test"]
    cfg = load_config(overrides=[*overrides, "rounds.rounds=3"])
    dep = deployment(cfg)
    tokens, port = tokens_for(6), free_port()

    async def client(cid):
        async with GrpcLink(f"127.0.0.1:{port}", cid, tokens[cid]) as link:
            await dep.client(link, cid).run()

    async def main():
        async with asyncio.TaskGroup() as tg:
            center = tg.create_task(
                run_center(cfg, address=f"127.0.0.1:{port}", tokens=TokenTable(tokens),
                           tls=None, mutual=False)
            )  # fmt: skip
            for cid in range(6):
                tg.create_task(client(cid))
        return center.result()

    result = asyncio.run(asyncio.wait_for(main(), LIMIT_S))
    run_dir = result.run_dir
    assert run_dir is not None
    assert run_dir.parent == tmp_path
    assert run_dir.name.endswith("-edge-test")
    for name in ("config.yaml", "metrics.sqlite", "model.npz", "summary.json", "report.html"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["rounds"] == 3
    assert summary["num_clients"] == 6
    assert summary["final_accuracy"] is not None
    with RunStore.open(run_dir) as store:
        rounds = store.rounds()
        devices = store.device_stats()
        _, params = store.load_model()
        assert "edge-test" in store.config_text()
    assert [r.round_idx for r in rounds] == [0, 1, 2]
    assert [r.clients_completed for r in rounds] == [5, 5, 5]
    assert sum(r.bytes_up + r.bytes_down for r in rounds) == result.wire_bytes
    np.testing.assert_array_equal(params, result.params)
    # Issue 16 part 1: the same metrics and per-device counts as the simulator's
    assert sum(d.rounds_selected for d in devices) == sum(r.clients_selected for r in rounds)
    assert sum(d.rounds_completed for d in devices) == 15
    rows = federation_metrics(rounds)
    assert all(row["completion_rate"] == 5 / 5 for row in rows)
    assert all(row["compression_ratio"] == pytest.approx(1.0, rel=0.01) for row in rows)
    assert all(row["device_utilization"] is None for row in rows)  # not seen by the center
