"""Issue 12 part 5: the typed per-round records validate, and map from the old extras keys."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError, fields

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedstrata.core.metrics import (
    STATS_RECORDS,
    CodecStats,
    PrecisionStats,
    PrivacySpent,
    ScheduleStats,
    StatsRecord,
    precision_stats,
    record_from_dict,
    records_from_extras,
)
from fedstrata.errors import DataError


def _value(cls: type[StatsRecord], name: str, top: int) -> st.SearchStrategy[float | int]:
    if name in cls.INTS:
        return st.integers(0, top)
    low = None if name in cls.SIGNED else 0.0
    return st.floats(min_value=low, allow_nan=False, allow_infinity=False) | st.just(math.nan)


def records(cls: type[StatsRecord], top: int = 2**63 - 1) -> st.SearchStrategy[StatsRecord]:
    """Any valid record of ``cls`` (ints up to ``top``): optional fields absent or not."""
    parts = {}
    for f in fields(cls):
        value = _value(cls, f.name, top)
        parts[f.name] = st.none() | value if f.default is None else value
    return st.builds(cls, **parts)


any_record = st.one_of(*(records(cls) for cls in STATS_RECORDS))
# extras held floats: counts in old run directories are exact up to 2**53
old_record = st.one_of(*(records(cls, 2**53) for cls in STATS_RECORDS))


def same(a: StatsRecord, b: StatsRecord) -> bool:
    """Field-by-field equality where NaN equals NaN."""
    if type(a) is not type(b):
        return False
    pairs = [(getattr(a, f.name), getattr(b, f.name)) for f in fields(a)]
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in pairs)


@settings(max_examples=150, deadline=None)
@given(any_record)
def test_every_record_round_trips_through_its_dict(record: StatsRecord) -> None:
    assert same(record_from_dict(record.FAMILY, record.as_dict()), record)


@settings(max_examples=150, deadline=None)
@given(old_record, st.dictionaries(st.sampled_from(["test_f1", "test_auc"]), st.floats()))
def test_old_extras_keys_map_back_to_the_record(record: StatsRecord, task: dict) -> None:
    """What a run wrote in ``extras`` before typed records (floats under the old keys,
    beside the task's own ``test_*`` metrics) loads as the same record."""
    assume(record.as_dict())  # a record of optional fields only, all absent, wrote nothing
    keys = record.legacy_keys()
    extras = {keys[name]: float(v) for name, v in record.as_dict().items()} | task
    found, rest = records_from_extras(extras)
    assert same(found[record.FAMILY], record)
    assert rest == task


def test_fedbuff_and_scheduler_share_the_throughput_key() -> None:
    """``sched_throughput_eps`` was written by both FedBuff and the scheduler: an old
    FedBuff round (no other sched_ keys) loads as AsyncStats, not ScheduleStats."""
    old = {
        "async_staleness_mean": 1.5, "async_staleness_max": 3.0, "async_in_flight": 4.0,
        "sched_throughput_eps": 20.0, "async_last_client_s": 2.0, "uplink_ratio": 1.0,
        "uplink_bytes_per_client": 400.0, "downlink_bytes_per_client": 400.0,
    }  # fmt: skip
    found, rest = records_from_extras(old)
    assert set(found) == {"fedbuff", "codec"}
    assert rest == {}
    assert found["fedbuff"].throughput_eps == 20.0  # type: ignore[attr-defined]
    assert found["fedbuff"].in_flight == 4  # type: ignore[attr-defined]
    assert found["codec"] == CodecStats(1.0, 400.0, 400.0)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: CodecStats(-1.0, 1.0, 1.0), r"CodecStats.uplink_ratio=-1.0 .* >= 0"),
        (lambda: CodecStats(math.inf, 1.0, 1.0), "must be finite"),
        (lambda: CodecStats("x", 1.0, 1.0), "must be a float"),  # type: ignore[arg-type]
        (lambda: PrivacySpent(1.0, 0.5, 1.0, 0.1, stage=-1), r"PrivacySpent.stage=-1"),
        (lambda: PrivacySpent(1.0, 0.5, 1.0, 0.1, stage=1.5), "must be an int"),  # type: ignore[arg-type]
        (lambda: PrivacySpent(1.0, 0.5, 1.0, 0.1, stage=True), "must be an int"),
        (lambda: record_from_dict("nope", {}), "unknown statistics family"),
        (lambda: record_from_dict("codec", {"ratio": 1.0}), r"unknown fields \['ratio'\]"),
        (lambda: record_from_dict("codec", {"uplink_ratio": 1.0}), "CodecStats"),
    ],
)
def test_invalid_records_name_the_field_value_and_rule(make, match) -> None:
    with pytest.raises(DataError, match=match):
        make()


def test_records_are_frozen_and_normalise_numbers() -> None:
    p = PrivacySpent(1, -1e-12, 2, 0.5, stage=2.0)  # type: ignore[arg-type]
    assert (type(p.epsilon_spent), type(p.stage)) == (float, int)
    assert p.epsilon_remaining < 0  # signed: the accountant may round just below 0
    with pytest.raises(FrozenInstanceError):
        p.stage = 3  # type: ignore[misc]
    nan = ScheduleStats(math.nan, math.nan, 0, 0, 0, 0, 0, 0, 0, 1, 1)
    assert math.isnan(nan.mean_utilization)  # no devices: not measurable
    assert "predictor_mape_last" not in nan.as_dict()


def test_every_family_is_a_round_metrics_field() -> None:
    from fedstrata.monitoring import RoundMetrics

    names = {f.name for f in fields(RoundMetrics)}
    assert {cls.FAMILY for cls in STATS_RECORDS} <= names
    assert len({cls.FAMILY for cls in STATS_RECORDS}) == len(STATS_RECORDS)


def test_precision_stats_sum_the_folded_clients_skipped_steps() -> None:
    reports = [
        {"train_loss": 0.5, "skipped_steps": 3.0, "loss_scale": 8192.0},
        {"train_loss": 0.4, "skipped_steps": 0.0, "loss_scale": 65536.0},
        {"train_loss": 0.3, "skipped_steps": 2.0, "loss_scale": 16384.0},
    ]
    assert precision_stats(reports) == PrecisionStats(5, 2, 8192.0)
    assert precision_stats([{"train_loss": 0.5}]) is None  # fp32 / bf16: no loss scaling
    assert precision_stats([]) is None
    with pytest.raises(DataError, match=r"PrecisionStats\.skipped_steps=-1 is invalid"):
        precision_stats([{"skipped_steps": -1.0}])
