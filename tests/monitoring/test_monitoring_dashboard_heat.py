"""The heat map's reader: history read newest-first by its thread, new rounds on request."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fedstrata.monitoring import RunStarted, RunStore
from fedstrata.monitoring.dashboard._heat import HeatMapReader
from fedstrata.monitoring.dashboard.models import HeatMap
from fedstrata.monitoring.devices import DeviceRound, RoundDetail


def _store_rounds(store: RunStore, make_metrics: Any, rounds: range) -> None:
    for r in rounds:
        devices = tuple(
            DeviceRound(c, "accepted", 0.0, 1.0, 0.0, False, (c + r) % 10 / 10) for c in range(8)
        )
        store.emit(RoundDetail(r, devices))
        store.emit(make_metrics(r))


def _complete(reader: HeatMapReader, rows: int, cols: int) -> HeatMap:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        heat = reader.heat_map(rows, cols)
        if heat is not None and heat.complete:
            return heat
    raise AssertionError("the heat map's history was not read in 30 s")


def test_reader_fills_history_then_follows_new_rounds(tmp_path: Path, make_metrics: Any) -> None:
    with RunStore.create(tmp_path / "run") as store:
        store.emit(RunStarted("heat", "x: 1\n", num_clients=8, num_params=1))
        _store_rounds(store, make_metrics, range(40))
        reader = HeatMapReader(store.path, devices=8, chunk_s=0.001)
        try:
            reader.update(39)
            first = reader.heat_map(rows=8, cols=40)  # the newest rounds come at once
            assert first is not None
            assert first.values[3][39] == pytest.approx((3 + 39) % 10 / 10)
            heat = _complete(reader, rows=8, cols=40)
            assert heat.round_end == 40
            assert heat.device_starts == list(range(8))
            for c in range(8):
                for r in range(40):
                    assert heat.values[c][r] == pytest.approx((c + r) % 10 / 10)
            _store_rounds(store, make_metrics, range(40, 43))
            reader.update(42)
            later = reader.heat_map(rows=1, cols=43)
            assert later is not None
            assert later.round_end == 43
            assert later.values[0][42] == pytest.approx(
                sum((c + 42) % 10 / 10 for c in range(8)) / 8
            )
        finally:
            reader.close()
            reader.close()
