"""The dashboard's per-device aggregation: the heat map's accumulator (fed by the
store's per-bin sums) and the straggler / slowest rankings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import DataError
from fedstrata.monitoring import RunStarted, RunStore
from fedstrata.monitoring.dashboard._devices import device_rows
from fedstrata.monitoring.dashboard._heat import HeatAccumulator
from fedstrata.monitoring.devices import DeviceRound, DeviceStats, RoundDetail


@settings(max_examples=40, deadline=None)
@given(
    devices=st.integers(1, 60),
    rounds=st.integers(1, 30),
    rows=st.integers(1, 8),
    cols=st.integers(1, 8),
    seed=st.integers(0, 999),
)
def test_heat_map_cells_are_the_mean_of_their_devices_and_rounds(
    devices, rounds, rows, cols, seed
) -> None:
    rng = np.random.default_rng(seed)
    util = rng.random((devices, rounds))
    util[rng.random(util.shape) < 0.5] = np.nan  # not selected
    acc = HeatAccumulator(devices, device_bins=7)
    for r in range(rounds):  # the store's per-round sums, one round at a time
        binned = {}
        for c in range(devices):
            if not math.isnan(util[c, r]):
                s, n = binned.get(c // acc.width, (0.0, 0))
                binned[c // acc.width] = (s + util[c, r], n + 1)
        acc.add([(r, b, s, n) for b, (s, n) in binned.items()], through=r)
    heat = acc.heat_map(rows, cols)
    if np.isnan(util).all():
        assert heat is None
        return
    assert heat is not None
    assert heat.device_end == devices
    assert heat.round_end == rounds
    d_edges = [*heat.device_starts, devices]
    r_edges = [*heat.round_starts, rounds]
    for i, row in enumerate(heat.values):
        for j, value in enumerate(row):
            block = util[d_edges[i] : d_edges[i + 1], r_edges[j] : r_edges[j + 1]]
            if np.isnan(block).all():
                assert value is None
            else:
                assert value == pytest.approx(float(np.nanmean(block)))


def test_store_sums_utilization_per_round_and_bin(tmp_path: Path, make_metrics) -> None:
    with RunStore.create(tmp_path / "run") as store:
        store.emit(RunStarted("bins", "x: 1\n", num_clients=6, num_params=1))
        for r in range(3):
            devices = tuple(
                DeviceRound(c, "accepted", 0.0, 1.0, 0.0, False, 0.1 * (c + r)) for c in range(6)
            )
            store.emit(RoundDetail(r, devices))
            store.emit(make_metrics(r))
        rows = store.utilization_by_bin(0, 2, 4)
        assert [(r, b, n) for r, b, _, n in rows] == [(1, 0, 4), (1, 1, 2), (2, 0, 4), (2, 1, 2)]
        assert rows[0][2] == pytest.approx(0.1 + 0.2 + 0.3 + 0.4)
        assert store.utilization_by_bin(2, 5, 4) == []
        with pytest.raises(DataError, match="width"):
            store.utilization_by_bin(0, 1, 0)


def _stats(cid: int, selected: int, straggled: int, compute_s: float) -> DeviceStats:
    return DeviceStats(cid, selected, selected - straggled, 0.5, straggled, compute_s, 1.0)


def test_stragglers_and_slowest_are_ranked_server_side() -> None:
    stats = [
        _stats(0, 10, 0, 1.0),
        _stats(1, 10, 2, 9.0),  # straggled 20% of its rounds: below the 25% share
        _stats(2, 8, 6, 5.0),
        _stats(3, 4, 4, 3.0),
        _stats(4, 0, 0, math.nan),
    ]
    count, stragglers, slowest = device_rows(stats, top=2)
    assert count == 2
    assert [r.client_id for r in stragglers] == [2, 3]
    assert [r.client_id for r in slowest] == [1, 2]
    assert not slowest[0].straggler
    assert slowest[1].straggler
    _, _, everyone = device_rows(stats, top=10)
    assert everyone[-1].mean_round_s is None  # never measurable: last, and null in JSON
