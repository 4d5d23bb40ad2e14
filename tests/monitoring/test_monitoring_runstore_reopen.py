"""Issue 15 part 3: a resumed run reopens its store and truncates the rounds recorded
after the checkpoint it continues from."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedstrata.core.metrics import ResilienceStats
from fedstrata.errors import DataError
from fedstrata.monitoring import ClientFailure, RunStarted, RunStatus, RunStore, RunTotals
from fedstrata.monitoring.devices import DeviceRound, NodeRound, RoundDetail


def _crashed_run(run_dir: Path, make_metrics, rounds: int) -> None:
    store = RunStore.create(run_dir)
    store.emit(RunStarted("crashed", "name: x\n", 10, 5))
    for r in range(rounds):
        store.emit(ClientFailure(round_idx=r, client_id=r, reason="nan"))
        store.emit(make_metrics(r))
    store._conn.close()  # a SIGKILL: no summary, no close


def test_reopen_truncates_later_rounds_and_records_them_again(tmp_path, make_metrics) -> None:
    run_dir = tmp_path / "run"
    _crashed_run(run_dir, make_metrics, rounds=4)
    with RunStore.reopen(run_dir, rounds_kept=2) as store:
        assert [m.round_idx for m in store.rounds()] == [0, 1]
        assert [f.round_idx for f in store.failures()] == [0, 1]
        for r in (2, 3, 4):
            store.emit(make_metrics(r))
        totals = RunTotals()
        for m in store.rounds():
            totals.add(m)
        store.emit(totals.finish("crashed", RunStatus.COMPLETED))
    with RunStore.open(run_dir) as done:
        assert [m.round_idx for m in done.rounds()] == [0, 1, 2, 3, 4]
        summary = done.summary()
        assert summary["status"] == "completed"
        assert summary["run_id"] == "crashed"


def test_reopen_keeps_everything_when_nothing_came_after(tmp_path, make_metrics) -> None:
    run_dir = tmp_path / "run"
    _crashed_run(run_dir, make_metrics, rounds=3)
    with RunStore.reopen(run_dir, rounds_kept=3) as store:
        assert len(store.rounds()) == 3
        with pytest.raises(DataError, match="already stored"):
            store.emit(make_metrics(2))


def test_reopen_refuses_a_directory_that_is_not_a_run(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        RunStore.reopen(tmp_path / "nowhere", rounds_kept=0)


def _device(r: int, c: int) -> DeviceRound:
    return DeviceRound(
        client_id=c,
        status="accepted" if (r + c) % 2 else "late",
        download_s=0.1,
        compute_s=1.0 + r,
        upload_s=0.2 * c,
        straggler=(r + c) % 3 == 0,
        utilization=0.1 * (r + 1),
        node=f"e{(r + c) % 2}",
    )


def _detail(r: int) -> RoundDetail:
    devices = [_device(r, c) for c in range(3)]
    return RoundDetail(r, devices, [NodeRound("e0", "edge", 10 * (r + 1), 3, 1.0)])


def _run_with_details(run_dir: Path, make_metrics, rounds: int, *, crash: bool) -> None:
    store = RunStore.create(run_dir)
    store.emit(RunStarted("run", "name: x\n", 3, 5))
    for r in range(rounds):
        store.emit(_detail(r))
        store.emit(make_metrics(r))
    if crash:
        store._conn.close()
    else:
        store.close()


def test_reopen_truncates_per_device_rows_and_recomputes_their_totals(
    tmp_path, make_metrics
) -> None:
    """The per-device totals are running sums: after a resume they equal those of a run
    that only ever recorded the rounds kept (then the resumed rounds add to them)."""
    _run_with_details(tmp_path / "crashed", make_metrics, rounds=4, crash=True)
    _run_with_details(tmp_path / "kept", make_metrics, rounds=2, crash=False)
    with RunStore.reopen(tmp_path / "crashed", rounds_kept=2) as store:
        resumed = store.device_stats()
        assert [t.round_idx for t in store.tier_stats()] == [0, 1]
    with RunStore.open(tmp_path / "kept") as kept:
        expected = kept.device_stats()
    assert resumed == expected
    assert [s.rounds_selected for s in resumed] == [2, 2, 2]


def test_a_version_4_store_reopened_holds_resilience_records_as_version_5(
    tmp_path, make_metrics
) -> None:
    """Schema version 5 added the resilience family (in ``stats``): a version-4 store
    still reads, and one reopened to continue it is relabelled, its resilience records
    truncated with their rounds."""
    run_dir = tmp_path / "run"
    _crashed_run(run_dir, make_metrics, rounds=2)
    with RunStore.reopen(run_dir, rounds_kept=2) as store:
        store._conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
        store._conn.commit()
    with RunStore.open(run_dir) as old:
        assert old.meta()["schema_version"] == "4"
        assert len(old.rounds()) == 2
    record = ResilienceStats(ckpt_critical_s=0.25, ckpt_object_s=0.2, failovers=1)
    with RunStore.reopen(run_dir, rounds_kept=1) as store:
        store.emit(make_metrics(1).with_stats(record))
        store.emit(make_metrics(2).with_stats(record))
    with RunStore.open(run_dir) as done:
        assert done.meta()["schema_version"] == "5"
        assert [m.resilience for m in done.rounds()] == [None, record, record]
    with RunStore.reopen(run_dir, rounds_kept=2) as store:
        assert [m.resilience for m in store.rounds()] == [None, record]
