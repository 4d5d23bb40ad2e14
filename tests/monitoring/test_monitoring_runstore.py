"""The run store round-trips events exactly and fails loudly on damaged files."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedstrata.core import ParamSpec
from fedstrata.core.metrics import STATS_RECORDS, StatsRecord
from fedstrata.errors import CheckpointCorrupt, CheckpointError, ConfigError, DataError, ShapeError
from fedstrata.monitoring import (
    METRICS_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    ClientFailure,
    Fanout,
    MemorySink,
    RoundMetrics,
    RunStarted,
    RunStatus,
    RunStore,
    RunTotals,
    _atomic,
    new_run_dir,
)

_seconds = st.floats(0.0, 1e7, allow_nan=False, allow_infinity=False)
_loss = st.none() | st.floats(allow_nan=True, allow_infinity=True)
_extras = st.dictionaries(st.text(min_size=1, max_size=12), st.floats(), max_size=4)


def _stat_value(cls: type[StatsRecord], name: str) -> st.SearchStrategy[float | int]:
    if name in cls.INTS:
        return st.integers(0, 2**63 - 1)
    low = None if name in cls.SIGNED else 0.0
    return st.floats(min_value=low, allow_nan=False, allow_infinity=False) | st.just(math.nan)


def _stats_record(cls: type[StatsRecord]) -> st.SearchStrategy[StatsRecord | None]:
    """None, or any valid record of ``cls`` (optional fields absent or present)."""
    parts = {}
    for f in dataclasses.fields(cls):
        value = _stat_value(cls, f.name)
        parts[f.name] = st.none() | value if f.default is None else value
    return st.none() | st.builds(cls, **parts)


@st.composite
def round_metrics(draw: st.DrawFn, round_idx: int) -> RoundMetrics:
    """Any valid RoundMetrics: disjoint client outcomes, breakdown within the round."""
    selected = draw(st.integers(0, 10_000))
    completed = draw(st.integers(0, selected))
    failed = draw(st.integers(0, selected - completed))
    late = draw(st.integers(0, selected - completed - failed))
    downlink, compute, uplink = draw(_seconds), draw(_seconds), draw(_seconds)
    sim_round = downlink + compute + uplink + draw(_seconds)
    return RoundMetrics(
        round_idx=round_idx,
        accuracy=draw(st.none() | st.floats(0.0, 1.0)),
        loss=draw(_loss),
        train_loss=draw(_loss),
        clients_selected=selected,
        clients_completed=completed,
        clients_failed=failed,
        clients_late=late,
        bytes_up=draw(st.integers(0, 2**63 - 1)),
        bytes_down=draw(st.integers(0, 2**63 - 1)),
        sim_round_s=sim_round,
        sim_time_s=sim_round + draw(_seconds),
        wall_round_s=draw(_seconds),
        compute_s=compute,
        downlink_s=downlink,
        uplink_s=uplink,
        extras=draw(_extras),
        **{cls.FAMILY: draw(_stats_record(cls)) for cls in STATS_RECORDS},
    )


@st.composite
def runs(draw: st.DrawFn) -> list[RoundMetrics]:
    indices = draw(st.lists(st.integers(0, 10**6), unique=True, max_size=6))
    return [draw(round_metrics(i)) for i in indices]


def _same_float(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_same_metrics(got: RoundMetrics, want: RoundMetrics) -> None:
    """Field-by-field equality where NaN equals NaN and None stays None."""
    for name in RoundMetrics.__dataclass_fields__:
        g, w = getattr(got, name), getattr(want, name)
        if name == "extras":
            assert list(g) == list(w)
            assert all(_same_float(g[k], w[k]) for k in w), (g, w)
        elif isinstance(w, StatsRecord):
            assert type(g) is type(w), (name, g, w)
            for f in dataclasses.fields(w):
                a, b = getattr(g, f.name), getattr(w, f.name)
                assert type(a) is type(b), (name, f.name, a, b)
                assert a == b or _same_float(a, b), (name, f.name, a, b)
        elif isinstance(w, float) or w is None:
            assert _same_float(g, w), (name, g, w)
        else:
            assert type(g) is type(w), (name, g, w)
            assert g == w, (name, g, w)


@settings(max_examples=40, deadline=None)
@given(runs())
def test_round_metrics_round_trip_exactly(metrics):
    """Issue 12 part 5: every typed record (codec, privacy, schedule, tiers, fedbuff,
    secagg, secagg_tree) round-trips through the run store, NaN and absent fields too."""
    with tempfile.TemporaryDirectory() as tmp:
        with RunStore.create(Path(tmp) / "run") as store:
            for m in metrics:
                store.emit(m)
        with RunStore.open(Path(tmp) / "run") as reader:
            got = reader.rounds()
    want = sorted(metrics, key=lambda m: m.round_idx)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_same_metrics(g, w)


def test_equal_metrics_compare_equal_after_round_trip(tmp_path, make_metrics):
    metrics = [make_metrics(r) for r in range(3)]
    with RunStore.create(tmp_path) as store:
        for m in metrics:
            store.emit(m)
    with RunStore.open(tmp_path) as reader:
        assert reader.rounds() == metrics


def test_failures_commit_with_their_round(tmp_path, make_metrics):
    with RunStore.create(tmp_path) as store:
        store.emit(ClientFailure(0, 7, "dropout"))
        store.emit(ClientFailure(0, 3, "invalid update: 4 NaN entries"))
        with RunStore.open(tmp_path) as live:
            assert live.failure_count() == 0  # not committed before the round
            store.emit(make_metrics(0))
            assert live.failures() == [
                ClientFailure(0, 7, "dropout"),
                ClientFailure(0, 3, "invalid update: 4 NaN entries"),
            ]
            assert live.rounds() == [make_metrics(0)]
        store.emit(ClientFailure(1, 1, "deadline"))
    with RunStore.open(tmp_path) as reader:  # close flushed the last failure
        assert reader.failure_count() == 3
        assert reader.failures(limit=1) == [ClientFailure(0, 7, "dropout")]


def test_store_in_a_directory_with_uri_characters(tmp_path, make_metrics):
    run_dir = tmp_path / "a b?#%c"
    with RunStore.create(run_dir) as store:
        store.emit(make_metrics(0))
    with RunStore.open(run_dir) as reader:
        assert reader.rounds() == [make_metrics(0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a b?#%c"]


def test_schema_version_mismatch_is_refused(tmp_path):
    RunStore.create(tmp_path).close()
    conn = sqlite3.connect(tmp_path / METRICS_FILE)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(DataError, match="found version '99'"):
        RunStore.open(tmp_path)


def test_metrics_database_uses_wal(tmp_path):
    with RunStore.create(tmp_path):
        conn = sqlite3.connect(tmp_path / METRICS_FILE)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()


def test_duplicate_round_is_refused(tmp_path, make_metrics):
    with RunStore.create(tmp_path) as store:
        store.emit(make_metrics(0))
        with pytest.raises(DataError, match="round 0 is already stored"):
            store.emit(make_metrics(0))
        store.emit(make_metrics(1))
    with RunStore.open(tmp_path) as reader:
        assert [m.round_idx for m in reader.rounds()] == [0, 1]


def test_summary_after_finish(tmp_path, make_metrics, write_run):
    rounds = [make_metrics(0), make_metrics(1, accuracy=None, loss=math.nan)]
    write_run(tmp_path, rounds, failures=[ClientFailure(0, 1, "x")])
    text = (tmp_path / SUMMARY_FILE).read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    with RunStore.open(tmp_path) as reader:
        assert reader.summary() == summary
        assert reader.config_text() == "rounds: 3\n"
    assert summary["status"] == "completed"
    assert summary["rounds"] == 2
    assert summary["final_accuracy"] == rounds[0].accuracy
    assert summary["final_loss"] is None  # NaN is not JSON
    assert summary["sim_time_s"] == 20.0
    assert summary["wall_time_s"] == 1.5
    assert summary["bytes_up"] == 3000
    assert summary["bytes_total"] == 3000 + 8000
    assert summary["client_failures_logged"] == 1
    assert (summary["num_clients"], summary["num_params"]) == (10, 42)
    assert summary["final_extras"] == {"test_f1": pytest.approx(0.2)}


def test_close_without_finish_writes_an_interrupted_summary(tmp_path, make_metrics):
    with RunStore.create(tmp_path) as store:
        store.emit(RunStarted("r1", "", num_clients=3, num_params=1))
        store.emit(make_metrics(0))
    with RunStore.open(tmp_path) as reader:
        summary = reader.summary()
    assert summary["status"] == RunStatus.INTERRUPTED.value
    assert summary["run_id"] == "r1"
    assert summary["rounds"] == 1
    assert summary["wall_time_s"] == 0.25


def test_store_is_a_sink_behind_a_fanout(tmp_path, make_metrics):
    memory = MemorySink()
    totals = RunTotals()
    with Fanout([RunStore.create(tmp_path), memory]) as fan:
        fan.emit(RunStarted("r", "a: 1\n", 2, 3))
        for r in range(2):
            fan.emit(make_metrics(r))
            totals.add(make_metrics(r))
        fan.emit(totals.finish("r", RunStatus.COMPLETED))
    assert len(memory.events) == 4
    with RunStore.open(tmp_path) as reader:
        assert len(reader.rounds()) == 2
        assert reader.summary()["rounds"] == 2


def test_misuse_is_refused(tmp_path, make_metrics):
    store = RunStore.create(tmp_path)
    store.emit(RunStarted("r", "", 1, 1))
    with pytest.raises(DataError, match="already started"):
        store.emit(RunStarted("r", "", 1, 1))
    with pytest.raises(DataError, match="cannot store"):
        store.emit("not an event")  # type: ignore[arg-type]
    store.emit(RunTotals().finish("r", RunStatus.FAILED, stop_reason="boom"))
    with pytest.raises(DataError, match="already finished"):
        store.emit(make_metrics(0))
    store.close()
    store.close()
    with pytest.raises(DataError, match="closed"):
        store.rounds()
    with pytest.raises(DataError, match="closed"):
        store.emit(ClientFailure(0, 0, "late"))
    with pytest.raises(ConfigError, match="holds one run"):
        RunStore.create(tmp_path)
    with RunStore.open(tmp_path) as reader:
        with pytest.raises(DataError, match="read-only"):
            reader.emit(make_metrics(0))
        with pytest.raises(DataError, match="read-only"):
            reader.save_model(ParamSpec(("w",), ((1,),)), np.zeros(1, np.float32))


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / SUMMARY_FILE
    _atomic.atomic_write_text(target, '{"old": true}')

    def fail(src, dst):
        raise OSError("no space left on device")

    monkeypatch.setattr(_atomic.os, "replace", fail)
    with pytest.raises(CheckpointError, match=r"summary\.json"):
        _atomic.atomic_write_text(target, '{"new": true}')
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == [SUMMARY_FILE]


def test_failed_summary_write_leaves_no_partial_file(tmp_path, monkeypatch, make_metrics):
    store = RunStore.create(tmp_path)
    store.emit(make_metrics(0))

    def fail(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(_atomic.os, "replace", fail)
    with pytest.raises(CheckpointError, match=r"summary\.json"):
        store.emit(RunTotals().finish("r", RunStatus.COMPLETED))
    monkeypatch.undo()
    store.close()
    with RunStore.open(tmp_path) as reader:
        assert reader.summary()["status"] == "interrupted"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_corrupt_metrics_database_names_the_file(tmp_path, make_metrics):
    (tmp_path / METRICS_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataError, match=METRICS_FILE):
        RunStore.open(tmp_path)


def test_foreign_sqlite_file_is_not_a_run_store(tmp_path):
    conn = sqlite3.connect(tmp_path / METRICS_FILE)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(DataError, match="not a fedstrata run store"):
        RunStore.open(tmp_path)


def test_invalid_stored_row_names_the_file(tmp_path, make_metrics):
    with RunStore.create(tmp_path) as store:
        store.emit(make_metrics(0))
    conn = sqlite3.connect(tmp_path / METRICS_FILE)
    conn.execute("UPDATE rounds SET accuracy = 7.0, extras = '[1]'")
    conn.commit()
    conn.close()
    with RunStore.open(tmp_path) as reader, pytest.raises(DataError, match=METRICS_FILE):
        reader.rounds()


@pytest.mark.parametrize(
    ("text", "match"),
    [("{not json", "not valid JSON"), ("[1, 2]", "not a run summary"), ("\xff", "")],
)
def test_corrupt_summary_names_the_file(tmp_path, text, match):
    RunStore.create(tmp_path).close()
    (tmp_path / SUMMARY_FILE).write_bytes(text.encode("latin-1"))
    with RunStore.open(tmp_path) as reader, pytest.raises(DataError, match=SUMMARY_FILE) as e:
        reader.summary()
    assert match in str(e.value)


def test_missing_files_name_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        RunStore.open(tmp_path / "nope")
    with pytest.raises(DataError, match=METRICS_FILE):
        RunStore.open(tmp_path)
    store = RunStore.create(tmp_path)
    with pytest.raises(DataError, match=SUMMARY_FILE):
        store.summary()
    with pytest.raises(DataError, match=r"config\.yaml"):
        store.config_text()
    with pytest.raises(CheckpointError, match=MODEL_FILE):
        store.load_model()
    store.close()


def _spec() -> ParamSpec:
    return ParamSpec(names=("w", "b", "scale", "empty"), shapes=((3, 2), (2,), (), (0, 4)))


def test_model_round_trips_exactly(tmp_path):
    spec = _spec()
    params = np.random.default_rng(0).standard_normal(spec.size).astype(np.float32)
    with RunStore.create(tmp_path) as store:
        store.save_model(spec, params)
    with RunStore.open(tmp_path) as reader:
        got_spec, got = reader.load_model()
    assert got_spec == spec
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, params)


def test_model_must_match_its_spec(tmp_path):
    with RunStore.create(tmp_path) as store, pytest.raises(ShapeError):
        store.save_model(_spec(), np.zeros(3, np.float32))


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip"])
def test_corrupt_model_raises_checkpoint_corrupt(tmp_path, damage):
    spec = _spec()
    params = np.arange(spec.size, dtype=np.float32)
    with RunStore.create(tmp_path) as store:
        store.save_model(spec, params)
    path = tmp_path / MODEL_FILE
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"\x00garbage" * 20)
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        offset = data.index(params.tobytes()) + 9  # inside the stored parameters
        data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with RunStore.open(tmp_path) as reader, pytest.raises(CheckpointCorrupt, match=MODEL_FILE):
        reader.load_model()


def test_model_with_inconsistent_arrays_is_corrupt(tmp_path):
    RunStore.create(tmp_path).close()
    np.savez(
        tmp_path / MODEL_FILE,
        format_version=np.array(1),
        params=np.zeros(4, np.float32),
        names=np.array(["w"]),
        ndims=np.array([2]),
        dims=np.array([3]),
    )
    with RunStore.open(tmp_path) as reader, pytest.raises(CheckpointCorrupt, match="disagree"):
        reader.load_model()


def test_new_run_dir_is_unique(tmp_path):
    made = [new_run_dir(tmp_path / "runs", "femnist", timestamp="20250101-120000") for _ in "abc"]
    assert [p.name for p in made] == [
        "20250101-120000-femnist",
        "20250101-120000-femnist-1",
        "20250101-120000-femnist-2",
    ]
    assert all(p.is_dir() for p in made)
    assert new_run_dir(tmp_path, "x").name.endswith("-x")


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "x" * 101, "sp ace"])
def test_new_run_dir_rejects_unsafe_names(tmp_path, name):
    with pytest.raises(ConfigError, match="name"):
        new_run_dir(tmp_path, name, timestamp="t")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 10**9), st.text()), max_size=20))
def test_failures_round_trip_in_order(failures):
    events = [ClientFailure(r, c, reason) for r, c, reason in failures]
    with tempfile.TemporaryDirectory() as tmp:
        with RunStore.create(Path(tmp)) as store:
            for event in events:
                store.emit(event)
        with RunStore.open(Path(tmp)) as reader:
            assert reader.failures() == events


# A version-2 metrics.sqlite as fedstrata wrote it before typed records: the features'
# figures were named floats in the ``extras`` JSON column (issue 12 part 5).
_V2_ROUNDS = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE rounds (
    round_idx INTEGER PRIMARY KEY, accuracy REAL, loss REAL, train_loss REAL,
    clients_selected INTEGER NOT NULL, clients_completed INTEGER NOT NULL,
    clients_failed INTEGER NOT NULL, clients_late INTEGER NOT NULL,
    bytes_up INTEGER NOT NULL, bytes_down INTEGER NOT NULL, sim_round_s REAL NOT NULL,
    sim_time_s REAL NOT NULL, wall_round_s REAL NOT NULL, compute_s REAL NOT NULL,
    downlink_s REAL NOT NULL, uplink_s REAL NOT NULL, extras TEXT NOT NULL
);
CREATE TABLE client_failures (
    id INTEGER PRIMARY KEY, round_idx INTEGER NOT NULL, client_id INTEGER NOT NULL,
    reason TEXT NOT NULL
);
INSERT INTO meta VALUES ('schema_version', '2');
"""
_V2_EXTRAS = {
    "test_f1": 0.75,
    "uplink_ratio": 12.5, "uplink_bytes_per_client": 320.0,
    "downlink_bytes_per_client": 4000.0, "server_decode_s": 0.01, "client_encode_s": 0.002,
    "epsilon_spent": 0.4, "epsilon_remaining": 1.6, "noise_multiplier": 1.1,
    "sampling_rate": 0.1, "dp_stage": 1.0,
    "center_ingress_bytes": 800.0, "region_ingress_bytes": 1600.0,
    "edge_ingress_bytes": 3200.0, "edge_rounds": 4.0, "client_updates": 10.0,
    "sched_mean_utilization": 0.9, "sched_min_utilization": 0.5, "sched_mean_idle_s": 1.0,
    "sched_total_idle_s": 10.0, "sched_throughput_eps": 25.0, "sched_devices": 10.0,
    "sched_useful_utilization": 0.85, "sched_partial": 2.0, "sched_dropped": 1.0,
    "sched_target_s": 30.0, "sched_mean_steps": 7.5,
    "secagg_protocol_s": 0.2, "secagg_server_s": 0.05, "secagg_client_s_mean": 0.01,
    "secagg_client_online_s_max": 0.03, "secagg_dropped": 1.0,
    "secagg_bytes_up_per_client": 900.0, "secagg_bytes_down_per_client": 300.0,
    "secagg_bandwidth_expansion": 1.2,
}  # fmt: skip


def test_a_run_directory_written_before_typed_records_loads_typed(tmp_path):
    """Issue 12 part 5: a version-2 store's extras keys become the typed fields on load;
    only the task's own metric stays in extras; the report renders."""
    from fedstrata.monitoring import write_report

    conn = sqlite3.connect(tmp_path / METRICS_FILE)
    with conn:
        conn.executescript(_V2_ROUNDS)
        row = (0, 0.5, 1.0, 1.2, 10, 9, 1, 0, 3000, 40000, 30.0, 30.0, 0.5, 20.0, 5.0, 4.0)
        conn.execute(f"INSERT INTO rounds VALUES ({', '.join('?' * 17)})",
                     (*row, json.dumps(_V2_EXTRAS)))  # fmt: skip
    conn.close()
    with RunStore.open(tmp_path) as reader:
        (m,) = reader.rounds()
    assert dict(m.extras) == {"test_f1": 0.75}
    assert m.codec is not None
    assert m.codec.uplink_ratio == 12.5
    assert m.codec.client_encode_s == 0.002
    assert m.privacy is not None
    assert (m.privacy.epsilon_spent, m.privacy.stage) == (0.4, 1)
    assert m.privacy.server_clipped is None  # no server clip in that run
    assert m.tiers is not None
    assert m.tiers.edge_ingress_bytes == 3200
    assert type(m.tiers.edge_rounds) is int
    assert m.schedule is not None
    assert (m.schedule.partial, m.schedule.target_s) == (2, 30.0)
    assert m.schedule.predictor_mape_last is None
    assert m.secagg is not None
    assert m.secagg.dropped == 1
    assert m.fedbuff is None
    assert m.secagg_tree is None
    html = write_report(tmp_path).read_text()
    assert "codec.uplink_ratio" in html  # plotted from the typed field


def test_summary_holds_the_final_typed_records(tmp_path, make_metrics):
    """Issue 12 part 5: summary.json's ``final_stats`` holds each family's last record
    (non-finite numbers as null), ``final_extras`` only the task's metrics."""
    from fedstrata.monitoring import CodecStats, PrivacySpent

    codec = CodecStats(4.0, 100.0, 400.0, server_decode_s=math.nan)
    with RunStore.create(tmp_path) as store:
        store.emit(RunStarted("r1", "", num_clients=3, num_params=1))
        store.emit(make_metrics(0).with_stats(PrivacySpent(0.5, 1.5, 1.1, 0.1)))
        store.emit(make_metrics(1).with_stats(codec))
    with RunStore.open(tmp_path) as reader:
        summary = reader.summary()
    assert summary["final_extras"] == {"test_f1": pytest.approx(0.2)}
    assert summary["final_stats"]["privacy"]["epsilon_spent"] == 0.5
    assert summary["final_stats"]["privacy"]["stage"] == 0
    assert summary["final_stats"]["codec"] == {
        "uplink_ratio": 4.0, "uplink_bytes_per_client": 100.0,
        "downlink_bytes_per_client": 400.0, "server_decode_s": None,
    }  # fmt: skip


def test_two_records_of_one_family_in_a_round_are_refused(make_metrics):
    from fedstrata.monitoring import CodecStats

    with pytest.raises(DataError, match="two CodecStats records"):
        make_metrics(0).with_stats(CodecStats(1.0, 1.0, 1.0), CodecStats(2.0, 1.0, 1.0))
    once = make_metrics(0).with_stats(CodecStats(1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="two CodecStats records"):
        once.with_stats(CodecStats(2.0, 1.0, 1.0))  # a hook may not overwrite the intake's
    with pytest.raises(DataError, match="codec"):
        make_metrics(0, codec={"uplink_ratio": 1.0})


def test_a_reader_takes_only_the_rounds_after_a_cursor_while_the_run_writes(
    tmp_path, make_metrics
):
    with RunStore.create(tmp_path / "run") as writer:
        writer.emit(RunStarted("cursor", "rounds: 5\n", num_clients=7, num_params=3))
        reader = RunStore.open(tmp_path / "run")
        for r in range(3):
            writer.emit(make_metrics(r))
        assert [m.round_idx for m in reader.rounds(since=0)] == [1, 2]
        writer.emit(make_metrics(3))
        assert [m.round_idx for m in reader.rounds(since=2)] == [3]
        assert reader.rounds(since=3) == []
        assert len(reader.rounds()) == 4
        meta = reader.meta()
        assert meta["run_id"] == "cursor"
        assert meta["num_clients"] == "7"
        reader.close()
