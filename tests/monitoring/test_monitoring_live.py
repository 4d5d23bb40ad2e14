"""Live rows equal the batch rows; the alert monitor logs and forwards each firing once."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.core.metrics import PrivacySpent
from fedstrata.monitoring import Alert, MemorySink, RoundMetrics
from fedstrata.monitoring.alerts import AlertRule, evaluate
from fedstrata.monitoring.live import AlertMonitor, LiveRows, alert_rows, privacy_plan_ratio


def _round(
    i: int, accuracy: float | None, completed: int, eps: float | None = None
) -> RoundMetrics:
    privacy = None
    if eps is not None:
        privacy = PrivacySpent(epsilon_spent=eps, epsilon_remaining=4.0 - eps,
                               noise_multiplier=1.0, sampling_rate=0.1)  # fmt: skip
    return RoundMetrics(
        round_idx=i, accuracy=accuracy, loss=1.0, train_loss=1.0, clients_selected=10,
        clients_completed=completed, clients_failed=10 - completed, clients_late=0,
        bytes_up=100, bytes_down=400, sim_round_s=10.0, sim_time_s=10.0 * (i + 1),
        wall_round_s=0.1, compute_s=6.0, downlink_s=1.0 + i % 3, uplink_s=1.0,
        privacy=privacy,
    )  # fmt: skip


rounds_strategy = st.lists(
    st.tuples(st.one_of(st.none(), st.floats(0, 1)), st.integers(0, 10)), min_size=1, max_size=15
).map(lambda xs: [_round(i, a, c) for i, (a, c) in enumerate(xs)])


@settings(max_examples=60, deadline=None)
@given(rounds_strategy)
def test_live_rows_equal_the_batch_rows(rounds: list[RoundMetrics]) -> None:
    live = LiveRows(total_rounds=20)
    online = [live.add(m) for m in rounds]
    batch = alert_rows(rounds, total_rounds=20)
    for got, want in zip(online, batch, strict=True):
        got.pop("recovery_time_s")  # a later round may settle it in the batch form
        want.pop("recovery_time_s")
        assert got == want


def test_the_privacy_plan_paces_the_budget_evenly() -> None:
    assert privacy_plan_ratio(_round(0, None, 10, eps=1.0), total_rounds=4) == pytest.approx(1.0)
    assert privacy_plan_ratio(_round(1, None, 10, eps=1.0), total_rounds=4) == pytest.approx(0.5)
    assert privacy_plan_ratio(_round(9, None, 10, eps=4.0), total_rounds=4) == pytest.approx(1.0)
    assert privacy_plan_ratio(_round(1, None, 10), total_rounds=4) is None  # no DP
    assert privacy_plan_ratio(_round(1, None, 10, eps=1.0), total_rounds=None) is None


def test_the_monitor_logs_stores_and_forwards_each_firing_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rule = AlertRule(name="Low", metric="completion_rate", op="<", threshold=0.95, for_rounds=2)
    forward = MemorySink()
    monitor = AlertMonitor([rule], [forward], total_rounds=6)
    rounds = [_round(i, None, c) for i, c in enumerate([10, 8, 7, 6, 10, 9])]
    caplog.set_level(logging.WARNING)
    for m in rounds:
        monitor.emit(m)
    monitor.emit(Alert("ignored", 0, 0.0, "info", "not a round"))  # only rounds count
    fired = [e for e in forward.events if isinstance(e, Alert)]
    assert [(a.rule, a.round) for a in fired] == [("Low", 2)]
    assert fired == evaluate([rule], alert_rows(rounds, total_rounds=6))
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert logged == [f"alert (warning) at round 2: {fired[0].message}"]
    assert monitor.fired == ["Low"]
    monitor.close()
