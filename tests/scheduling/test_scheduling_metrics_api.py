"""Metrics helpers and the package's public surface."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fedstrata.scheduling as sched
from fedstrata.errors import DataError
from fedstrata.scheduling import (
    device_utilization,
    round_utilization,
)


def test_utilization_idle_and_throughput() -> None:
    busy = np.array([10.0, 5.0, 2.5])
    np.testing.assert_allclose(device_utilization(busy, 10.0), [1.0, 0.5, 0.25])
    m = round_utilization(busy, 10.0, np.array([100, 50, 50]))
    assert m.mean_utilization == pytest.approx(7 / 12)
    assert m.min_utilization == 0.25
    assert m.total_idle_s == pytest.approx(12.5)
    assert m.mean_idle_s == pytest.approx(12.5 / 3)
    assert m.throughput_eps == pytest.approx(20.0)
    assert m.devices == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.devices = 4  # type: ignore[misc]


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(DataError, match="round_s"):
        device_utilization(np.ones(2), 0.0)
    with pytest.raises(DataError, match="examples"):
        round_utilization(np.ones(2), 1.0, np.ones(3))


def test_public_api_surface() -> None:
    assert sorted(sched.__all__) == sched.__all__
    for name in sched.__all__:
        assert getattr(sched, name) is not None, name
    assert {
        "Registry",
        "TimePredictor",
        "allocate_work",
        "settle_at_deadline",
        "OortSelector",
        "RandomSelector",
        "FedBuffServer",
        "measure_device",
        "register_measurement",
        "relative_speed",
    } <= set(sched.__all__)
