"""Metric events validate at construction; totals fold rounds; the fan-out isolates sinks."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedstrata.errors import ConfigError, DataError
from fedstrata.monitoring import (
    ClientFailure,
    Fanout,
    MemorySink,
    MetricEvent,
    RunFinished,
    RunStarted,
    RunStatus,
    RunTotals,
)


def test_round_metrics_normalises_and_freezes(make_metrics):
    m = make_metrics(0, sim_round_s=10, sim_time_s=10, compute_s=1, extras={"eps": 1})
    assert isinstance(m.sim_round_s, float)
    assert isinstance(m.compute_s, float)
    assert isinstance(m.extras["eps"], float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.round_idx = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        m.extras["eps"] = 2.0  # type: ignore[index]


def test_round_metrics_copies_extras(make_metrics):
    extras = {"eps": 1.0}
    m = make_metrics(0, extras=extras)
    extras["eps"] = 5.0
    assert m.extras["eps"] == 1.0


def test_diverged_losses_are_recorded(make_metrics):
    m = make_metrics(0, loss=math.nan, train_loss=math.inf, accuracy=None)
    assert math.isnan(m.loss)
    assert m.train_loss == math.inf
    assert m.accuracy is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"round_idx": -1}, "round_idx"),
        ({"clients_selected": True}, "clients_selected"),
        ({"clients_failed": 1.0}, "clients_failed"),
        ({"accuracy": 1.5}, "accuracy"),
        ({"accuracy": math.nan}, "accuracy"),
        ({"loss": "low"}, "loss"),
        ({"bytes_up": 2**63}, "bytes_up"),
        ({"bytes_down": -1}, "bytes_down"),
        ({"sim_round_s": math.inf}, "sim_round_s"),
        ({"wall_round_s": -0.5}, "wall_round_s"),
        ({"clients_completed": 10}, "completed+failed+late"),
        ({"compute_s": 9.0}, "downlink+compute+uplink"),
        ({"sim_time_s": 5.0}, "sim_time_s"),
        ({"extras": {"": 1.0}}, "extras key"),
        ({"extras": {"eps": "x"}}, "extras['eps']"),
        ({"extras": [("eps", 1.0)]}, "extras"),
    ],
)
def test_round_metrics_rejects_bad_fields(make_metrics, overrides, field):
    with pytest.raises(DataError, match=r"invalid") as info:
        make_metrics(**{"round_idx": 0, **overrides})
    assert field in str(info.value)


def test_breakdown_tolerates_float_rounding(make_metrics):
    # 0.1 + 0.2 > 0.3 in binary floating point: still a valid breakdown.
    make_metrics(0, sim_round_s=0.3, sim_time_s=0.3, downlink_s=0.1, compute_s=0.2, uplink_s=0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"round_idx": -1, "client_id": 0, "reason": "x"},
        {"round_idx": 0, "client_id": -2, "reason": "x"},
        {"round_idx": 0, "client_id": 0, "reason": None},
    ],
)
def test_client_failure_rejects_bad_fields(kwargs):
    with pytest.raises(DataError):
        ClientFailure(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"run_id": "", "config_yaml": "", "num_clients": 1, "num_params": 1},
        {"run_id": "r", "config_yaml": b"x", "num_clients": 1, "num_params": 1},
        {"run_id": "r", "config_yaml": "", "num_clients": 0, "num_params": 1},
        {"run_id": "r", "config_yaml": "", "num_clients": 1, "num_params": -1},
    ],
)
def test_run_started_rejects_bad_fields(kwargs):
    with pytest.raises(DataError):
        RunStarted(**kwargs)


def _finished(**overrides) -> RunFinished:
    fields = {
        "run_id": "r",
        "status": RunStatus.COMPLETED,
        "rounds_completed": 1,
        "final_accuracy": 0.5,
        "best_accuracy": 0.6,
        "final_loss": 1.0,
        "sim_time_s": 3.0,
        "wall_time_s": 1.0,
        "bytes_up": 1,
        "bytes_down": 2,
    }
    fields.update(overrides)
    return RunFinished(**fields)


def test_run_finished_accepts_status_text():
    assert _finished(status="stopped").status is RunStatus.STOPPED


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"status": "exploded"}, "status"),
        ({"run_id": ""}, "run_id"),
        ({"best_accuracy": 2.0}, "best_accuracy"),
        ({"wall_time_s": math.nan}, "wall_time_s"),
        ({"rounds_completed": -1}, "rounds_completed"),
        ({"stop_reason": 3}, "stop_reason"),
        ({"segment_wall_time_s": -1.0}, "segment_wall_time_s"),
        ({"segment_wall_time_s": math.inf}, "segment_wall_time_s"),
    ],
)
def test_run_finished_rejects_bad_fields(overrides, field):
    with pytest.raises(DataError, match=field):
        _finished(**overrides)


def test_totals_follow_the_last_and_best_accuracy(make_metrics):
    totals = RunTotals()
    for r, acc in enumerate([0.2, 0.7, None, 0.5, None]):
        totals.add(make_metrics(r, accuracy=acc, loss=None if acc is None else 1.0 - acc))
    fin = totals.finish("run", RunStatus.STOPPED, stop_reason="budget")
    assert (fin.final_accuracy, fin.best_accuracy, fin.final_loss) == (0.5, 0.7, 0.5)
    assert fin.rounds_completed == 5
    assert fin.sim_time_s == 50.0
    assert fin.wall_time_s == pytest.approx(5 * 0.25)
    assert fin.stop_reason == "budget"


def test_totals_without_accuracy(make_metrics):
    totals = RunTotals()
    totals.add(make_metrics(0, accuracy=None, loss=None))
    fin = totals.finish("run", RunStatus.COMPLETED, wall_time_s=9.0)
    assert fin.final_accuracy is None
    assert fin.best_accuracy is None
    assert fin.final_loss is None
    assert fin.wall_time_s == 9.0


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(0, 10**12), st.integers(0, 10**12)), max_size=30))
def test_totals_sum_bytes_over_rounds(make_metrics, traffic):
    totals = RunTotals()
    for r, (up, down) in enumerate(traffic):
        totals.add(make_metrics(r, bytes_up=up, bytes_down=down))
    assert totals.bytes_up == sum(u for u, _ in traffic)
    assert totals.bytes_down == sum(d for _, d in traffic)
    assert totals.rounds == len(traffic)


class _Raising:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0
        self.closed = False

    def emit(self, event: MetricEvent) -> None:
        self.calls += 1
        raise self.exc

    def close(self) -> None:
        self.closed = True
        raise self.exc


def test_fanout_isolates_a_raising_sink(make_metrics, caplog):
    before, bad, after = MemorySink(), _Raising(RuntimeError("disk full")), MemorySink()
    events = [make_metrics(r) for r in range(3)]
    with caplog.at_level(logging.WARNING, logger="fedstrata.monitoring"):
        fan = Fanout([before, bad, after], disable_after=None)
        for event in events:
            fan.emit(event)
        fan.close()
    assert before.events == events
    assert after.events == events
    assert bad.calls == 3
    assert bad.closed
    assert before.closed
    assert after.closed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4  # three emits, one close
    assert "RoundMetrics" in warnings[0].getMessage()


def test_fanout_disables_a_sink_after_consecutive_failures(make_metrics):
    bad, good = _Raising(ValueError("x")), MemorySink()
    fan = Fanout([bad, good], disable_after=2)
    for r in range(5):
        fan.emit(make_metrics(r))
    assert bad.calls == 2
    assert fan.active_sinks == [good]
    assert len(good.events) == 5


def test_fanout_lets_keyboard_interrupt_through(make_metrics):
    fan = Fanout([_Raising(KeyboardInterrupt())])
    with pytest.raises(KeyboardInterrupt):
        fan.emit(make_metrics(0))


def test_fanout_close_is_idempotent():
    sink = MemorySink()
    with Fanout([sink]) as fan:
        pass
    fan.close()
    assert sink.closed


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_fanout_rejects_bad_disable_after(bad):
    with pytest.raises(ConfigError, match="disable_after"):
        Fanout([], disable_after=bad)
