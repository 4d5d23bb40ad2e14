"""Device registry: CRUD, the allocation query, history, bulk writes and migrations.

Every test runs on SQLite (a file under tmp_path) and, when FEDSTRATA_TEST_PG_URL is set
(e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``), on PostgreSQL too:
each PostgreSQL test gets a fresh database created through that URL and dropped after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, make_url, text

from fedstrata.errors import ConfigError, RegistryError
from fedstrata.scheduling import (
    DeviceMeasurement,
    DeviceProfiles,
    HistoryBatch,
    ModelPartition,
    Registry,
    WorkStatus,
    migrate,
    register_measurement,
    registry_url,
)
from fedstrata.scheduling._tables import metadata

PG_URL = os.environ.get("FEDSTRATA_TEST_PG_URL")
PG_SKIP = "set FEDSTRATA_TEST_PG_URL=postgresql+psycopg://USER@HOST:PORT/DB to test PostgreSQL"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason=PG_SKIP)],
        ),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """A URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield registry_url(os.path.join(str(tmp_path), "registry.db"))
        return
    assert PG_URL is not None
    name = f"fedstrata_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    with Registry.open(db_url) as reg:
        yield reg


def make_profiles(n: int, seed: int = 0, start: int = 0) -> DeviceProfiles:
    rng = np.random.default_rng(seed)
    return DeviceProfiles(
        device_id=np.arange(start, start + n),
        cpu_score=np.exp(rng.uniform(np.log(0.02), np.log(20.0), n)),
        memory_gb=rng.choice([1.0, 2.0, 4.0, 8.0], n),
        network_latency_ms=rng.uniform(5, 100, n),
        uplink_mbps=rng.uniform(1, 50, n),
        downlink_mbps=rng.uniform(10, 200, n),
        availability=rng.uniform(0.1, 1.0, n),
        bf16_speedup=rng.uniform(0.5, 3.0, n),
        fp16_speedup=rng.uniform(0.2, 3.0, n),
    )


def assert_profiles_equal(a: DeviceProfiles, b: DeviceProfiles) -> None:
    np.testing.assert_array_equal(a.device_id, b.device_id)
    for name in (
        "cpu_score",
        "memory_gb",
        "network_latency_ms",
        "uplink_mbps",
        "downlink_mbps",
        "availability",
        "bf16_speedup",
        "fp16_speedup",
    ):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12)


def test_open_migrates_to_head_and_is_idempotent(db_url: str) -> None:
    with Registry.open(db_url) as reg:
        assert reg.revision() == "0003"
        assert reg.count_devices() == 0
    with Registry.open(db_url) as reg:
        assert reg.revision() == "0003"


def test_sqlite_runs_in_wal_mode(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "wal.db")
    with Registry.open(path) as reg:
        reg.upsert_devices(make_profiles(3))
        with reg._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_migrated_schema_matches_the_table_metadata(registry: Registry) -> None:
    with registry._engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []


def test_upsert_and_read_back_devices(registry: Registry) -> None:
    profiles = make_profiles(50)
    assert registry.upsert_devices(profiles) == 50
    assert registry.count_devices() == 50
    assert_profiles_equal(registry.devices(), profiles)
    wanted = np.array([7, 3, 42])
    assert_profiles_equal(registry.devices(wanted), profiles.take(wanted))


def test_upsert_updates_existing_devices(registry: Registry) -> None:
    registry.upsert_devices(make_profiles(10, seed=1))
    changed = make_profiles(5, seed=2)  # devices 0..4 with new values
    registry.upsert_devices(changed)
    assert registry.count_devices() == 10
    assert_profiles_equal(registry.devices(np.arange(5)), changed)


def test_insert_devices_keeps_registered_ones(registry: Registry) -> None:
    """Issue 11 defect 19: adding generated devices never replaces registered ones."""
    measured = make_profiles(3, seed=1)  # devices 0..2
    registry.upsert_devices(measured)
    assert registry.insert_devices(make_profiles(6, seed=2)) == 3  # only 3..5 are new
    assert registry.count_devices() == 6
    assert_profiles_equal(registry.devices(np.arange(3)), measured)
    assert_profiles_equal(
        registry.devices(np.arange(3, 6)), make_profiles(6, seed=2).take(np.arange(3, 6))
    )
    assert_profiles_equal(registry.registered([1, 99, 4]), registry.devices([1, 4]))


def test_unknown_devices_raise_registry_error(registry: Registry) -> None:
    registry.upsert_devices(make_profiles(3))
    with pytest.raises(RegistryError, match=r"not registered: \[99\]"):
        registry.devices([1, 99])


def test_delete_devices_removes_their_history(registry: Registry) -> None:
    registry.upsert_devices(make_profiles(4))
    registry.record_history(HistoryBatch(np.arange(4), 0, 10, 10, 1.0, 1.0, 0))
    assert registry.delete_devices([1, 2, 77]) == 2
    assert registry.count_devices() == 2
    np.testing.assert_array_equal(registry.history().device_id, [0, 3])


def test_partitions_crud(registry: Registry) -> None:
    parts = [ModelPartition(0, 1.0, 0.25, "quarter"), ModelPartition(1, 6.0, 1.0, "full")]
    registry.upsert_partitions(parts)
    registry.upsert_partitions([ModelPartition(1, 5.0, 1.0, "full")])
    assert registry.partitions() == [parts[0], ModelPartition(1, 5.0, 1.0, "full")]


def test_allocation_query_matches_numpy_reference(registry: Registry) -> None:
    profiles = make_profiles(200, seed=3)
    registry.upsert_devices(profiles)
    parts = [
        ModelPartition(0, 0.5, 0.25),
        ModelPartition(1, 3.0, 1.0),
        ModelPartition(2, 6.0, 2.0),
    ]
    registry.upsert_partitions(parts)
    got = registry.allocation_candidates()
    rows = [
        (
            float(profiles.cpu_score[i] / p.compute_intensity),
            int(profiles.device_id[i]),
            p.partition_id,
        )
        for p in parts
        for i in range(len(profiles))
        if profiles.memory_gb[i] >= p.required_memory_gb
    ]
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    np.testing.assert_array_equal(got.device_id, [r[1] for r in rows])
    np.testing.assert_array_equal(got.partition_id, [r[2] for r in rows])
    np.testing.assert_allclose(got.score, [r[0] for r in rows], rtol=1e-12)


def test_allocation_query_filters_partition_availability_and_limit(registry: Registry) -> None:
    profiles = make_profiles(100, seed=4)
    registry.upsert_devices(profiles)
    registry.upsert_partitions([ModelPartition(0, 0.5, 1.0), ModelPartition(1, 4.0, 2.0)])
    got = registry.allocation_candidates(1, min_availability=0.5, limit=10)
    assert len(got) == 10
    assert set(got.partition_id.tolist()) == {1}
    chosen = registry.devices(got.device_id)
    assert (chosen.memory_gb >= 4.0).all()
    assert (chosen.availability >= 0.5).all()
    assert (np.diff(got.score) <= 0).all()
    eligible = (profiles.memory_gb >= 4.0) & (profiles.availability >= 0.5)
    np.testing.assert_allclose(got.score[0], profiles.cpu_score[eligible].max() / 2.0)
    with pytest.raises(ConfigError, match="limit"):
        registry.allocation_candidates(limit=0)


def test_history_round_trip_and_avg_train_time(registry: Registry) -> None:
    registry.upsert_devices(make_profiles(3))
    status = [WorkStatus.COMPLETED, WorkStatus.PARTIAL, WorkStatus.DROPPED]
    registry.record_history(
        HistoryBatch(
            np.arange(3), 0, 100, [100, 40, 0], [1.0, 2.0, 3.0], [2.0, 4.0, np.nan], status
        ),
        ewma=0.5,
    )
    registry.record_history(
        HistoryBatch(np.arange(3), 1, 100, 100, np.nan, [4.0, 4.0, 6.0], WorkStatus.COMPLETED),
        ewma=0.5,
    )
    hist = registry.history()
    np.testing.assert_array_equal(hist.round_idx, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(hist.completed_work, [100, 40, 0, 100, 100, 100])
    np.testing.assert_array_equal(hist.status, [0, 1, 2, 0, 0, 0])
    assert np.isnan(hist.actual_s[2])
    assert np.isnan(hist.predicted_s[3:]).all()
    np.testing.assert_allclose(registry.avg_train_time([0, 1, 2]), [3.0, 4.0, 6.0])
    assert len(registry.history(since_round=1)) == 3
    assert len(registry.history(device_ids=[2], until_round=0)) == 1


def test_history_of_unregistered_device_is_rejected(registry: Registry) -> None:
    registry.upsert_devices(make_profiles(2))
    with pytest.raises(RegistryError, match="inconsistent"):
        registry.record_history(HistoryBatch(np.array([0, 5]), 0, 10, 10, 1.0, 1.0, 0))
    assert len(registry.history()) == 0  # the whole batch rolled back


def test_bulk_10k_devices_and_1k_history_rows_per_round(registry: Registry) -> None:
    profiles = make_profiles(10_000, seed=5)
    registry.upsert_devices(profiles)
    assert registry.count_devices() == 10_000
    for r in range(3):
        ids = np.arange(r * 1000, (r + 1) * 1000)
        registry.record_history(HistoryBatch(ids, r, 64, 64, 1.0, np.full(1000, 2.0 + r), 0))
    assert len(registry.history()) == 3000
    assert_profiles_equal(
        registry.devices(np.arange(9_990, 10_000)), profiles.take(np.arange(9_990, 10_000))
    )


def test_register_measurement_inserts_then_updates_measured_columns(registry: Registry) -> None:
    m = DeviceMeasurement(
        throughput_eps=500.0,
        flops_per_example=2e6,
        memory_total_gb=16.0,
        memory_available_gb=6.0,
        rtt_ms=8.0,
        repeats=3,
    )
    register_measurement(registry, 11, m)
    got = registry.devices([11])
    np.testing.assert_allclose(
        [got.cpu_score[0], got.memory_gb[0], got.network_latency_ms[0]], [1.0, 6.0, 4.0]
    )
    assert got.uplink_mbps[0] == 10.0  # schema default for a new device
    assert (got.bf16_speedup[0], got.fp16_speedup[0]) == (1.0, 1.0)
    registry.upsert_devices(DeviceProfiles(np.array([11]), 1.0, 6.0, 4.0, 33.0, 99.0, 0.5))
    measured = DeviceMeasurement(1e3, 2e6, 16.0, 5.0, None, 3, bf16_speedup=1.8, fp16_speedup=0.3)
    register_measurement(registry, 11, measured)
    got = registry.devices([11])
    assert (got.cpu_score[0], got.memory_gb[0], got.uplink_mbps[0]) == (2.0, 5.0, 33.0)
    assert (got.bf16_speedup[0], got.fp16_speedup[0]) == (1.8, 0.3)


def test_old_revision_database_is_upgraded_in_place(db_url: str) -> None:
    migrate(db_url, "0001")
    engine = create_engine(db_url)
    old = MetaData()
    old.reflect(engine)
    assert set(old.tables) == {"alembic_version", "device_profile", "model_partitions"}
    stamp = datetime(2024, 1, 2, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            old.tables["device_profile"].insert(),
            [
                {
                    "device_id": i,
                    "cpu_score": 1.0 + i,
                    "memory_gb": 2.0,
                    "network_latency": 30.0,
                    "avg_train_time": 5.0,
                    "last_update": stamp,
                }
                for i in range(5)
            ],
        )
        conn.execute(
            old.tables["model_partitions"].insert(),
            [{"partition_id": 0, "required_memory": 1.0, "compute_intensity": 0.5}],
        )
    engine.dispose()
    with Registry.open(db_url) as reg:
        assert reg.revision() == "0003"
        got = reg.devices()
        np.testing.assert_array_equal(got.device_id, np.arange(5))
        np.testing.assert_allclose(got.cpu_score, 1.0 + np.arange(5))
        np.testing.assert_allclose(got.uplink_mbps, 10.0)  # new column, default value
        np.testing.assert_allclose(got.availability, 1.0)
        np.testing.assert_allclose(got.bf16_speedup, 1.0)  # 0003: no speedup recorded
        np.testing.assert_allclose(got.fp16_speedup, 1.0)
        np.testing.assert_allclose(reg.avg_train_time(np.arange(5)), 5.0)
        assert reg.partitions() == [ModelPartition(0, 1.0, 0.5, "")]
        with reg._engine.connect() as conn:
            assert "round_history" in inspect(conn).get_table_names()


def test_database_from_a_newer_fedstrata_is_refused(db_url: str) -> None:
    migrate(db_url, "head")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(RegistryError, match="migration"):
        Registry.open(db_url)


def test_bad_targets_raise_clear_errors(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="URL or a file path"):
        registry_url("")
    with pytest.raises(RegistryError, match="cannot open registry"):
        Registry.open("nosuchdialect://host/db")
    with pytest.raises(RegistryError):
        Registry.open(os.path.join(str(tmp_path), "missing-dir", "x", "r.db"))
