"""Registry records validate their columns and name what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from fedstrata.errors import ConfigError, DataError
from fedstrata.scheduling import DeviceProfiles, HistoryBatch, ModelPartition, WorkStatus


def test_device_profiles_broadcast_scalars_and_convert_units() -> None:
    p = DeviceProfiles(np.array([3, 1]), [2.0, 0.5], 4.0, 10.0, 5.0, 50.0, 1.0)
    np.testing.assert_array_equal(p.memory_gb, [4.0, 4.0])
    np.testing.assert_allclose(p.flops, [2e9, 5e8])
    assert len(p) == 2
    np.testing.assert_array_equal(p.take(np.array([1])).device_id, [1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"device_id": np.array([1, 1])}, "unique"),
        ({"device_id": np.array([-1, 2])}, "device_id"),
        ({"device_id": np.array([1.5, 2.0])}, "integer"),
        ({"cpu_score": [1.0, 0.0]}, "cpu_score=0.0 is invalid: must be > 0"),
        ({"availability": [1.0, 1.5]}, "availability"),
        ({"uplink_mbps": [1.0, np.nan]}, "uplink_mbps=nan"),
        ({"memory_gb": [1.0, 2.0, 3.0]}, r"memory_gb has shape \(3,\)"),
    ],
)
def test_device_profiles_reject_bad_columns(kwargs: dict[str, object], match: str) -> None:
    cols: dict[str, object] = {
        "device_id": np.array([1, 2]),
        "cpu_score": 1.0,
        "memory_gb": 1.0,
        "network_latency_ms": 1.0,
        "uplink_mbps": 1.0,
        "downlink_mbps": 1.0,
        "availability": 1.0,
    }
    cols.update(kwargs)
    with pytest.raises(DataError, match=match):
        DeviceProfiles(**cols)  # type: ignore[arg-type]


def test_history_batch_checks_work_and_status() -> None:
    ok = HistoryBatch(
        np.array([1, 2]),
        0,
        10,
        [10, 3],
        np.nan,
        [1.0, np.nan],
        [WorkStatus.COMPLETED, WorkStatus.PARTIAL],
    )
    assert len(ok) == 2
    with pytest.raises(DataError, match="completed_work"):
        HistoryBatch(np.array([1]), 0, 10, 11, 1.0, 1.0, 0)
    with pytest.raises(DataError, match="status"):
        HistoryBatch(np.array([1]), 0, 10, 10, 1.0, 1.0, 9)
    with pytest.raises(DataError, match="round_idx"):
        HistoryBatch(np.array([1]), -1, 10, 10, 1.0, 1.0, 0)
    with pytest.raises(DataError, match="actual_s"):
        HistoryBatch(np.array([1]), 0, 10, 10, 1.0, -1.0, 0)


def test_model_partition_validation() -> None:
    with pytest.raises(ConfigError, match="compute_intensity"):
        ModelPartition(0, 1.0, 0.0)
    with pytest.raises(ConfigError, match="required_memory_gb"):
        ModelPartition(0, -1.0, 1.0)
