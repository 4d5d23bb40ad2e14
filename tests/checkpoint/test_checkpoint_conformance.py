"""The one conformance suite every checkpoint store passes: memory ring, local disk,
object storage through fsspec (in-memory filesystem) and on a real S3 server (radosgw).

Laws: save/load round-trips bytes exactly; latest() is the newest checkpoint that
verifies; a corrupt newest falls back to the previous one with a warning; retention
keeps exactly the newest N; a write interrupted between its temporary write and its
rename never yields a good checkpoint, partial or otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.checkpoint import CheckpointStore, FileStore, MemoryStore
from fedstrata.checkpoint.format import checkpoint_key, round_of_temp_key
from fedstrata.errors import CheckpointCorrupt, CheckpointError

Opener = Callable[[int], MemoryStore | FileStore]
Fresh = Callable[[], Opener]
HOWS = ("flip", "truncate", "no-header")
EXAMPLES = {"object-radosgw": 3}  # each S3 call is a real HTTP round trip
blobs = st.binary(min_size=0, max_size=2048)
rounds = st.integers(min_value=0, max_value=10**6)


def law(
    skip: dict[str, str] | None = None, **strategies: st.SearchStrategy[Any]
) -> Callable[..., Callable[[Fresh, str], None]]:
    """A property test run on every backend (but those ``skip`` names, with the reason):
    15 examples each, a few on the real S3 server (the fsspec backend runs the same code
    on every example)."""

    def wrap(prop: Callable[..., None]) -> Callable[[Fresh, str], None]:
        def test(new_location: Fresh, backend: str) -> None:
            if backend in (skip or {}):
                pytest.skip((skip or {})[backend])

            def example(**drawn: Any) -> None:
                prop(new_location, backend, **drawn)

            examples = EXAMPLES.get(backend, 15)
            run = settings(max_examples=examples, deadline=None, database=None)
            run(given(**strategies)(example))()

        test.__name__, test.__doc__ = prop.__name__, prop.__doc__
        return test

    return wrap


def corrupt(store: MemoryStore | FileStore, round_num: int, how: str, at: int = 0) -> None:
    """Damage one stored checkpoint the way a bad disk or a torn upload would."""
    if isinstance(store, MemoryStore):
        info, data = store._entries[round_num]
        store._entries[round_num] = (info, _damage(data, how, at))
        return
    key = checkpoint_key(round_num)
    data = store.blobs.read(key)
    store.blobs.write_temp(key, [_damage(data, how, at)])  # in place, not atomically


def _damage(data: bytes, how: str, at: int) -> bytes:
    damaged = _damaged(data, how, at)
    return damaged if damaged != data else data + b"\x00"  # (truncating b"" changes nothing)


def _damaged(data: bytes, how: str, at: int) -> bytes:
    if how == "truncate":
        return data[: at % max(len(data), 1)]
    if how == "no-header":
        return data[at % 64 + 1 :] if len(data) > 64 else b""
    if not data:
        return b"\x00"
    position = at % len(data)
    return data[:position] + bytes([data[position] ^ 0x5A]) + data[position + 1 :]


def test_each_backend_is_a_checkpoint_store(new_location: Fresh) -> None:
    store = new_location()(3)
    assert isinstance(store, CheckpointStore)
    assert store.tier in ("memory", "disk", "object")
    assert store.latest() is None
    assert store.list() == []


@law(saves=st.dictionaries(rounds, blobs, min_size=1, max_size=6))
def test_save_load_round_trips_bytes_exactly(
    new_location: Fresh, backend: str, *, saves: dict[int, bytes]
) -> None:
    store = new_location()(len(saves))
    infos = {r: store.save(r, blob) for r, blob in saves.items()}
    for r, blob in saves.items():
        assert store.load(r) == blob
        assert (infos[r].size, infos[r].round) == (len(blob), r)
    assert [i.round for i in store.list()] == sorted(saves)
    assert {i.round: i.sha256 for i in store.list()} == {r: i.sha256 for r, i in infos.items()}


@law(
    saves=st.dictionaries(rounds, blobs, min_size=1, max_size=5),
    damaged=st.sets(st.integers(0, 4)),
    how=st.sampled_from(HOWS),
    at=st.integers(0, 10_000),
)
def test_latest_is_the_newest_that_verifies(
    new_location: Fresh,
    backend: str,
    *,
    saves: dict[int, bytes],
    damaged: set[int],
    how: str,
    at: int,
) -> None:
    store = new_location()(len(saves))
    for r, blob in saves.items():
        store.save(r, blob)
    ordered = sorted(saves)
    bad = {ordered[i] for i in damaged if i < len(ordered)}
    for r in bad:
        corrupt(store, r, how, at)
    good = [r for r in ordered if r not in bad]
    found = store.latest()
    if not good:
        assert found is None
        return
    assert found is not None
    assert (found[0].round, found[1]) == (good[-1], saves[good[-1]])


@pytest.mark.parametrize("how", HOWS)
def test_corrupt_newest_falls_back_to_previous_with_warning(
    new_location: Fresh, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = new_location()(3)
    store.save(1, b"one" * 100)
    store.save(2, b"two" * 100)
    corrupt(store, 2, how, at=17)
    with caplog.at_level(logging.WARNING):
        found = store.latest()
    assert found is not None
    assert (found[0].round, found[1]) == (1, b"one" * 100)
    assert any(
        "round 2" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    with pytest.raises(CheckpointCorrupt):
        store.load(2)


@law(keep=st.integers(1, 4), order=st.lists(rounds, min_size=0, max_size=8, unique=True))
def test_retention_keeps_exactly_the_newest_n(
    new_location: Fresh, backend: str, *, keep: int, order: list[int]
) -> None:
    store = new_location()(keep)
    for r in order:
        store.save(r, r.to_bytes(4, "little"))
    assert [i.round for i in store.list()] == sorted(order)[-keep:]
    for r in sorted(order)[:-keep]:
        with pytest.raises(CheckpointError):
            store.load(r)


_CRASH_LOSES_MEMORY = {"memory": "a crash loses the memory tier whole: nothing partial remains"}


class _Crash(BaseException):
    """A process dying: nothing after it runs (not even ``except Exception``)."""


@law(_CRASH_LOSES_MEMORY, blob=blobs, cut=st.floats(0.0, 1.0))
def test_interrupted_write_never_yields_a_good_checkpoint(
    new_location: Fresh, backend: str, *, blob: bytes, cut: float
) -> None:
    reopen = new_location()
    store = reopen(3)
    store.save(1, b"good")
    real_write = store.blobs.write_temp

    def torn_write(key: str, chunks: list[bytes]) -> None:
        data = b"".join(chunks)
        real_write(key, [data[: int(len(data) * cut)]])
        raise _Crash

    store.blobs.write_temp = torn_write  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        store.save(2, blob)
    after = reopen(3)  # what a restarted process sees
    assert [i.round for i in after.list()] == [1]
    found = after.latest()
    assert found is not None
    assert (found[0].round, found[1]) == (1, b"good")
    with pytest.raises(CheckpointError):
        after.load(2)
    after.save(3, b"next")  # the next save sweeps the crashed write's temporary
    assert [n for n in after.blobs.names() if round_of_temp_key(n) is not None] == []


@law({"memory": "the memory tier has no files"}, blob=blobs.filter(bool), cut=st.floats(0, 0.999))
def test_torn_committed_file_is_rejected(
    new_location: Fresh, backend: str, *, blob: bytes, cut: float
) -> None:
    """Were a backend's rename not atomic, a torn file under the committed name would
    still fail its length or SHA-256 check and never be restored."""
    store = new_location()(3)
    store.save(1, b"good")
    store.save(2, blob)
    data = store.blobs.read(checkpoint_key(2))
    store.blobs.write_temp(checkpoint_key(2), [data[: int(len(data) * cut)]])
    with pytest.raises(CheckpointCorrupt):
        store.load(2)
    found = store.latest()
    assert found is not None
    assert found[0].round == 1


def test_missing_round_and_bad_arguments_raise_checkpoint_error(new_location: Fresh) -> None:
    store = new_location()(2)
    with pytest.raises(CheckpointError, match="round"):
        store.load(7)
    with pytest.raises(CheckpointError, match="round_num"):
        store.save(-1, b"x")
    with pytest.raises(CheckpointError, match="blob must be bytes"):
        store.save(1, "text")  # type: ignore[arg-type]
    assert store.list() == []


def test_bytearray_and_memoryview_are_saved_as_bytes(new_location: Fresh) -> None:
    store = new_location()(3)
    store.save(1, bytearray(b"abc"))  # type: ignore[arg-type]
    store.save(2, memoryview(b"defg"))  # type: ignore[arg-type]
    assert (store.load(1), store.load(2)) == (b"abc", b"defg")


def test_a_second_reader_sees_new_checkpoints(new_location: Fresh, backend: str) -> None:
    """A standby reading the store the active process writes sees each new round."""
    reopen = new_location()
    writer, reader = reopen(3), reopen(3)
    assert reader.latest() is None
    writer.save(4, b"four")
    found = reader.latest()
    assert found == (writer.list()[-1], b"four")


def test_crash_after_the_whole_temporary_is_written_leaves_no_checkpoint(
    new_location: Fresh, backend: str
) -> None:
    if backend == "memory":
        pytest.skip(_CRASH_LOSES_MEMORY["memory"])
    reopen = new_location()
    store = reopen(3)
    store.save(1, b"good")

    def crash(temp: str, key: str) -> None:
        raise _Crash

    store.blobs.commit = crash  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        store.save(2, b"complete but never renamed")
    after = reopen(3)
    assert any(round_of_temp_key(n) == 2 for n in after.blobs.names())
    assert [i.round for i in after.list()] == [1]
    found = after.latest()
    assert found is not None
    assert found[0].round == 1
