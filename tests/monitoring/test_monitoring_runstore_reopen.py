"""Issue 15 part 3: a resumed run reopens its store and truncates the rounds recorded
after the checkpoint it continues from."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedstrata.errors import DataError
from fedstrata.monitoring import ClientFailure, RunStarted, RunStatus, RunStore, RunTotals


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
