"""The catalogue's definitions and formulas on hand-made rounds (explicit arithmetic)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.core.metrics import PrivacySpent, SystemStats
from fedstrata.monitoring import RoundMetrics
from fedstrata.monitoring.catalogue import GROUPS, METRICS, WINDOW, federation_metrics

MakeMetrics = Callable[..., RoundMetrics]
KEYS = (
    "compression_ratio", "sync_share", "bandwidth_utilization",
    "device_utilization", "round_time_s", "flop_efficiency",
    "convergence_speed", "accuracy_fluctuation", "privacy_spent_eps",
    "completion_rate", "recovery_time_s", "contention",
)  # fmt: skip


def test_twelve_metrics_in_four_groups_of_three_in_the_contract_order() -> None:
    assert tuple(d.key for d in METRICS) == KEYS
    for g, group in enumerate(GROUPS):
        assert {d.group for d in METRICS[3 * g : 3 * g + 3]} == {group}
    assert all(d.formula and d.title and d.unit for d in METRICS)


def _system(**kw: float | int | None) -> SystemStats:
    base: dict[str, float | int | None] = {
        "devices": 4, "dense_bytes": 40_000, "busy_s": 24.0, "transfer_s": 8.0,
        "contention_s": 2.0, "flops": 3.0e9, "peak_flops": 1.0e9,
        "link_capacity_bytes": 20_000.0, "link_bytes": 9_000,
    }  # fmt: skip
    base.update(kw)
    return SystemStats(**base)  # type: ignore[arg-type]


def test_round_formulas(make_metrics: MakeMetrics) -> None:
    m = make_metrics(0, bytes_up=6000, bytes_down=4000, sim_round_s=10.0, downlink_s=1.0,
                     compute_s=6.0, uplink_s=2.0, clients_selected=10, clients_completed=8,
                     system=_system(),
                     privacy=PrivacySpent(epsilon_spent=0.75, epsilon_remaining=1.25,
                                          noise_multiplier=1.1, sampling_rate=0.1))  # fmt: skip
    (row,) = federation_metrics([m])
    assert list(row) == list(KEYS)
    assert row["compression_ratio"] == pytest.approx(40_000 / (6000 + 4000))
    assert row["sync_share"] == pytest.approx((1.0 + 2.0) / 10.0)
    assert row["bandwidth_utilization"] == pytest.approx(9_000 / 20_000)
    assert row["device_utilization"] == pytest.approx(24.0 / (4 * 10.0))
    assert row["round_time_s"] == 10.0
    assert row["flop_efficiency"] == pytest.approx(3.0e9 / (1.0e9 * 10.0))
    assert row["convergence_speed"] is None  # one evaluated round
    assert row["accuracy_fluctuation"] is None
    assert row["privacy_spent_eps"] == 0.75
    assert row["completion_rate"] == pytest.approx(8 / 10)
    assert row["recovery_time_s"] is None  # no failure recorded
    assert row["contention"] == pytest.approx(2.0 / 8.0)


def test_not_recorded_figures_give_none(make_metrics: MakeMetrics) -> None:
    m = make_metrics(0, downlink_s=0.0, compute_s=0.0, uplink_s=0.0, clients_selected=0,
                     clients_completed=0, clients_failed=0, clients_late=0)  # fmt: skip
    (row,) = federation_metrics([m])
    for key in KEYS:
        if key != "round_time_s":
            assert row[key] is None, key
    no_peak = replace(m, system=_system(peak_flops=None, link_capacity_bytes=None))
    (row,) = federation_metrics([no_peak])
    assert row["flop_efficiency"] is None
    assert row["bandwidth_utilization"] is None
    assert row["device_utilization"] == pytest.approx(24.0 / 40.0)


def test_quality_window(make_metrics: MakeMetrics) -> None:
    accs = [0.1, 0.3, None, 0.4, 0.35, 0.6, 0.7]
    rounds = [make_metrics(r, accuracy=a) for r, a in enumerate(accs)]
    rows = federation_metrics(rounds)
    # round 4: window rounds 0..4, evaluated 0,1,3,4 -> (0.35 - 0.1) / (4 - 0)
    assert rows[4]["convergence_speed"] == pytest.approx((0.35 - 0.1) / 4)
    deltas = [0.3 - 0.1, 0.4 - 0.3, 0.35 - 0.4]
    mean = sum(deltas) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in deltas) / 3)
    assert rows[4]["accuracy_fluctuation"] == pytest.approx(std)
    # round 6: window rounds 2..6, evaluated 3,4,5,6
    assert rows[6]["convergence_speed"] == pytest.approx((0.7 - 0.4) / (6 - 3))
    assert WINDOW == 5
    # round 2 was not evaluated: the window still has rounds 0 and 1
    assert rows[2]["convergence_speed"] == pytest.approx((0.3 - 0.1) / 1)
    assert rows[1]["accuracy_fluctuation"] is None  # two points, one delta


def test_recovery_within_the_round_and_in_a_later_one(make_metrics: MakeMetrics) -> None:
    r0 = make_metrics(0, system=_system(failure_at_s=3.0, recovered_at_s=4.5, first_accept_s=2.0))
    r1 = make_metrics(1, system=_system(failure_at_s=17.0, first_accept_s=12.0))
    r2 = make_metrics(2, clients_completed=0, system=_system())
    r3 = make_metrics(3, system=_system(first_accept_s=33.0))
    r4 = make_metrics(4, system=_system(failure_at_s=44.0))
    rows = federation_metrics([r0, r1, r2, r3, r4])
    assert rows[0]["recovery_time_s"] == pytest.approx(4.5 - 3.0)
    assert rows[1]["recovery_time_s"] == pytest.approx(33.0 - 17.0)  # round 3's first accept
    assert rows[2]["recovery_time_s"] is None
    assert rows[4]["recovery_time_s"] is None  # not recovered (yet)


@given(
    completed=st.integers(0, 50), extra=st.integers(0, 50),
    busy=st.floats(0, 1e4), devices=st.integers(1, 100), round_s=st.floats(1e-3, 1e4),
)  # fmt: skip
def test_rates_are_the_ratios_of_their_figures(
    completed: int, extra: int, busy: float, devices: int, round_s: float
) -> None:
    m = RoundMetrics(
        round_idx=0, accuracy=None, loss=None, train_loss=None,
        clients_selected=completed + extra, clients_completed=completed, clients_failed=0,
        clients_late=0, bytes_up=1, bytes_down=1, sim_round_s=round_s, sim_time_s=round_s,
        wall_round_s=0.0, compute_s=0.0, downlink_s=0.0, uplink_s=0.0,
        system=SystemStats(devices=devices, dense_bytes=8, busy_s=busy, transfer_s=0.0),
    )  # fmt: skip
    (row,) = federation_metrics([m])
    rate = row["completion_rate"]
    assert rate is None if completed + extra == 0 else 0 <= rate <= 1
    assert row["device_utilization"] == pytest.approx(busy / (devices * round_s))
    assert row["compression_ratio"] == 4.0
    assert row["contention"] is None
