"""Runs with a device registry keep what the registry holds (issue 11 defect 19)."""

import numpy as np
import pytest

from fedstrata.api import run
from fedstrata.api.scheduling import registry_table
from fedstrata.config import load_config
from fedstrata.scheduling import DeviceMeasurement, Registry, register_measurement
from fedstrata.sim import ProfileDistribution, ProfileTable

MEASURED = DeviceMeasurement(
    throughput_eps=850.0,  # x 1e6 FLOPs per example = 0.85 GFLOP/s, as in the issue
    flops_per_example=1e6,
    memory_total_gb=32.0,
    memory_available_gb=22.8,
    rtt_ms=None,
    repeats=3,
)


def _measured_columns(reg: Registry, ids: list[int]) -> np.ndarray:
    d = reg.devices(ids)
    return np.stack([d.cpu_score, d.memory_gb, d.network_latency_ms])


def test_run_with_a_registry_keeps_measured_devices(tmp_path):
    """Issue 11 defect 19: generated profiles never replace registered (measured) ones."""
    db = tmp_path / "devices.db"
    with Registry.open(db) as reg:
        for device in (0, 5):
            register_measurement(reg, device, MEASURED)
        before = _measured_columns(reg, [0, 5])
    overrides = [
        "output.run_store=false", "sim.workers=0", "rounds.rounds=2", "data.num_clients=12",
        "rounds.clients_per_round=4", f"scheduling.registry_url={db}",
    ]  # fmt: skip
    result = run(load_config(overrides=overrides))
    with Registry.open(db) as reg:
        np.testing.assert_array_equal(_measured_columns(reg, [0, 5]), before)
        assert before[0, 0] == pytest.approx(0.85)  # GFLOP/s
        assert before[1, 0] == pytest.approx(22.8)  # GB
        assert reg.count_devices() == 12  # the other ten were generated and registered
    assert result.notes["device profiles"] == "2 of 12 from the registry (ids 0, 5), 10 generated"
    again = run(load_config(overrides=overrides))  # now the registry holds everyone
    assert again.notes["device profiles"] == "12 of 12 from the registry, 0 generated"


def test_registry_table_uses_registered_rows_and_adds_the_rest(tmp_path):
    """Issue 11 defect 19: the run's table holds the registered profile of a device."""
    generated = ProfileTable.generate(6, ProfileDistribution(), np.random.default_rng(0))
    with Registry.open(tmp_path / "r.db") as reg:
        register_measurement(reg, 2, MEASURED)
        merged = registry_table(reg, generated)
        assert merged.from_registry.tolist() == [2]
        assert merged.table.flops[2] == pytest.approx(0.85e9)
        np.testing.assert_array_equal(
            np.delete(merged.table.flops, 2), np.delete(generated.flops, 2)
        )
        assert reg.devices([2]).cpu_score[0] == pytest.approx(0.85)
        assert reg.count_devices() == 6
    assert registry_table(None, generated).table is generated


def test_plan_reads_the_registered_profiles(tmp_path):
    """Issue 11 defects 18 and 19: ``plan`` times the devices ``run`` would use."""
    from fedstrata.api.plan import predict

    db = tmp_path / "devices.db"
    base = ["data.num_clients=12", "rounds.clients_per_round=null"]
    plain = predict(load_config(overrides=base)).flat_s
    slow = DeviceMeasurement(1.0, 1e6, 32.0, 22.8, None, 3)  # 1 MFLOP/s: the straggler
    with Registry.open(db) as reg:
        register_measurement(reg, 3, slow)
    with_registry = predict(load_config(overrides=[*base, f"scheduling.registry_url={db}"]))
    assert with_registry.flat_s > plain + 1.0
    with Registry.open(db) as reg:
        assert reg.count_devices() == 1  # planning writes nothing
