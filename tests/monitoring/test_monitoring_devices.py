"""Per-device and per-node rows validate at construction, naming what is wrong."""

from __future__ import annotations

import math
import re

import pytest

from fedstrata.errors import DataError
from fedstrata.monitoring.devices import DeviceRound, NodeRound, RoundDetail

GOOD = {"client_id": 3, "status": "accepted", "download_s": 0.1, "compute_s": 1.0,
        "upload_s": 0.2, "straggler": False, "utilization": 0.5}  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"status": "gone"}, "status='gone'"),
        ({"download_s": -1.0}, "download_s=-1.0"),
        ({"upload_s": math.inf}, "upload_s=inf"),
        ({"utilization": 1.5}, "utilization=1.5"),
        ({"client_id": -2}, "client_id=-2"),
        ({"straggler": 1}, "straggler/node"),
    ],
)
def test_a_bad_device_row_is_refused_by_name(bad: dict[str, object], named: str) -> None:
    with pytest.raises(DataError, match=re.escape(named)):
        DeviceRound(**{**GOOD, **bad})  # type: ignore[arg-type]


def test_ints_become_floats_and_nan_utilization_means_not_measured() -> None:
    row = DeviceRound(**{**GOOD, "compute_s": 2, "utilization": math.nan})  # type: ignore[arg-type]
    assert type(row.compute_s) is float
    assert math.isnan(row.utilization)


def test_round_detail_holds_rows_of_its_kinds() -> None:
    detail = RoundDetail(0, [DeviceRound(**GOOD)], [NodeRound("e0", "edge", 10, 2, 1.0)])  # type: ignore[arg-type]
    assert isinstance(detail.devices, tuple)
    with pytest.raises(DataError, match="devices"):
        RoundDetail(0, (NodeRound("e0", "edge", 10, 2, 1.0),))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="ingress_bytes"):
        NodeRound("e0", "edge", -1, 2, 1.0)
