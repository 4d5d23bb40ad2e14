"""The Checkpointer: tiers on their schedules, memory on the caller's thread, one
background thread for the rest, superseding, errors, and the newest good restore."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from fedstrata.checkpoint import (
    Checkpointer,
    CheckpointInfo,
    FileStore,
    MemoryStore,
    Tier,
    open_store,
)
from fedstrata.errors import CheckpointError, ConfigError


class _Recording:
    """A store wrapper that records the thread of each save and can hold saves back."""

    def __init__(self, inner: MemoryStore | FileStore, gate: threading.Event | None = None):
        self.inner, self.tier, self.gate = inner, inner.tier, gate
        self.threads: list[str] = []
        self.saved: list[int] = []
        self.started = threading.Event()

    def save(self, round_num: int, blob: bytes) -> CheckpointInfo:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30)
        self.saved.append(round_num)
        return self.inner.save(round_num, blob)

    def load(self, round_num: int) -> bytes:
        return self.inner.load(round_num)

    def latest(self) -> tuple[CheckpointInfo, bytes] | None:
        return self.inner.latest()

    def list(self) -> list[CheckpointInfo]:
        return self.inner.list()

    def close(self) -> None:
        self.inner.close()


class _Failing(_Recording):
    def save(self, round_num: int, blob: bytes) -> CheckpointInfo:
        raise CheckpointError(f"disk full at round {round_num}")


def _disk(tmp_path: Path, keep: int = 10) -> FileStore:
    store = open_store(str(tmp_path / "ckpt"), keep=keep)
    assert isinstance(store, FileStore)
    return store


def test_each_tier_saves_on_its_schedule(tmp_path: Path) -> None:
    memory, disk = MemoryStore("m", keep=3), _disk(tmp_path)
    with Checkpointer([Tier(memory, 1), Tier(disk, 4)]) as checkpointer:
        for r in range(1, 11):
            checkpointer.snapshot(r, bytes([r]) * 64)
            checkpointer.flush()  # no superseding: every due round is written
        timings = checkpointer.timings
        assert [i.round for i in memory.list()] == [8, 9, 10]
        assert [i.round for i in disk.list()] == [4, 8]
    assert memory.list() == []  # closing the checkpointer closes its stores
    assert (timings["memory"].saves, timings["disk"].saves) == (10, 2)
    assert timings["disk"].last_round == 8
    assert timings["disk"].save_s is not None
    assert timings["disk"].save_total_s >= timings["disk"].save_s


def test_memory_on_the_callers_thread_the_rest_in_one_background_thread(
    tmp_path: Path,
) -> None:
    memory = _Recording(MemoryStore("m"))
    disk = _Recording(_disk(tmp_path))
    remote = _Recording(FileStore("object", _disk(tmp_path / "remote").blobs))
    with Checkpointer([Tier(memory, 1), Tier(disk, 1), Tier(remote, 1)]) as checkpointer:
        for r in range(3):
            checkpointer.snapshot(r, b"x")
            checkpointer.flush()
    assert set(memory.threads) == {threading.current_thread().name}
    assert set(disk.threads) == set(remote.threads) == {"checkpointer"}


def test_a_newer_snapshot_supersedes_a_queued_older_one(tmp_path: Path) -> None:
    gate = threading.Event()
    disk = _Recording(_disk(tmp_path), gate)
    with Checkpointer([Tier(disk, 1)]) as checkpointer:
        checkpointer.snapshot(1, b"one")
        assert disk.started.wait(timeout=30)  # round 1 is being written, held at the gate
        checkpointer.snapshot(2, b"two")  # queued
        checkpointer.snapshot(3, b"three")  # replaces round 2 in the queue
        gate.set()
        checkpointer.flush()
        assert checkpointer.timings["disk"].superseded == 1
    assert disk.saved == [1, 3]
    assert disk.inner.load(3) == b"three"


def test_latest_prefers_the_newest_round_then_the_fastest_tier(tmp_path: Path) -> None:
    memory, disk = MemoryStore("m"), _disk(tmp_path)
    with Checkpointer([Tier(memory, 1), Tier(disk, 2)]) as checkpointer:
        for r in range(1, 5):
            checkpointer.snapshot(r, f"round {r}".encode())
        checkpointer.flush()
        found = checkpointer.latest()
        assert found is not None
        assert (found[0].round, found[0].tier, found[1]) == (4, "memory", b"round 4")
        assert checkpointer.timings["memory"].restore_s is not None
        assert checkpointer.timings["disk"].restore_s is None


def test_latest_falls_back_across_tiers_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory, disk = MemoryStore("m", keep=1), _disk(tmp_path)
    with Checkpointer([Tier(memory, 1), Tier(disk, 2)]) as checkpointer:
        for r in range(1, 4):
            checkpointer.snapshot(r, f"round {r}".encode())
        checkpointer.flush()
        info, _ = memory._entries[3]
        memory._entries[3] = (info, b"rot")  # the memory copy of round 3 went bad
        with caplog.at_level(logging.WARNING):
            found = checkpointer.latest()
        assert found is not None
        assert (found[0].round, found[0].tier, found[1]) == (2, "disk", b"round 2")
        assert checkpointer.timings["disk"].restore_s is not None
    assert any("round 3" in r.getMessage() for r in caplog.records)


def test_latest_of_nothing_is_none(tmp_path: Path) -> None:
    with Checkpointer([Tier(MemoryStore("m"), 1), Tier(_disk(tmp_path), 1)]) as checkpointer:
        assert checkpointer.latest() is None


def test_a_failed_background_save_is_raised_by_flush_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failing = _Failing(_disk(tmp_path))
    checkpointer = Checkpointer([Tier(failing, 1)])
    with caplog.at_level(logging.ERROR):
        checkpointer.snapshot(5, b"x")
        with pytest.raises(CheckpointError, match="disk full at round 5"):
            checkpointer.flush()
    assert checkpointer.timings["disk"].failures == 1
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    checkpointer.flush()  # reported once
    checkpointer.close()


def test_close_writes_what_is_queued_and_then_refuses_snapshots(tmp_path: Path) -> None:
    disk = _disk(tmp_path)
    checkpointer = Checkpointer([Tier(disk, 1)])
    checkpointer.snapshot(7, b"seven")
    checkpointer.close()
    assert disk.load(7) == b"seven"
    with pytest.raises(CheckpointError, match="closed"):
        checkpointer.snapshot(8, b"eight")
    checkpointer.close()  # idempotent


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_tier_every_rounds_must_be_a_positive_int(every: object) -> None:
    with pytest.raises(ConfigError, match="every_rounds"):
        Tier(MemoryStore("m"), every)  # type: ignore[arg-type]


def test_tiers_must_have_distinct_names() -> None:
    with pytest.raises(ConfigError, match="distinct"):
        Checkpointer([Tier(MemoryStore("a"), 1), Tier(MemoryStore("b"), 2)])


class _Buggy(_Recording):
    def save(self, round_num: int, blob: bytes) -> CheckpointInfo:
        raise RuntimeError("a bug in a store")


def test_an_unexpected_error_in_the_background_is_reported_not_lost(tmp_path: Path) -> None:
    checkpointer = Checkpointer([Tier(_Buggy(_disk(tmp_path)), 1)])
    checkpointer.snapshot(1, b"x")
    with pytest.raises(CheckpointError, match="RuntimeError: a bug in a store"):
        checkpointer.flush()
    checkpointer.snapshot(2, b"y")  # the background thread is still alive
    with pytest.raises(CheckpointError):
        checkpointer.close()
