"""Fixtures of the checkpoint tests: a private radosgw for the whole session, and a
factory of fresh stores of every kind at new locations."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedstrata.checkpoint import FileStore, FsspecBlobs, MemoryStore, open_store
from fedstrata.checkpoint._radosgw import RadosGateway, missing_binaries, radosgw

StoreFactory = Callable[[int], "MemoryStore | FileStore"]


@pytest.fixture(scope="session")
def rados_gateway() -> Iterator[RadosGateway]:
    """A real S3 server (Ceph radosgw) with a bucket; skipped without Ceph, except in CI
    (FEDSTRATA_CI=1), where a missing binary fails the test."""
    missing = missing_binaries()
    if missing:
        reason = f"Ceph radosgw test cluster needs {', '.join(missing)}"
        if os.environ.get("FEDSTRATA_CI") == "1":
            pytest.fail(reason + " (FEDSTRATA_CI=1: the object tier must be tested)")
        pytest.skip(reason)
    with radosgw() as gateway:
        yield gateway


BACKENDS = ["memory", "disk", "object-fsspec", "object-radosgw"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _fsspec_store(root: str, keep: int) -> FileStore:
    from fsspec.implementations.memory import MemoryFileSystem

    return FileStore("object", FsspecBlobs(MemoryFileSystem(), root, f"memory-fs://{root}"), keep)


@pytest.fixture
def new_location(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], Callable[[int], MemoryStore | FileStore]]:
    """``new_location()`` makes a fresh, empty location and returns ``open(keep)``, which
    opens a store there (again and again: a reopen is what a restarted process sees)."""
    gateway = request.getfixturevalue("rados_gateway") if backend == "object-radosgw" else None

    def fresh() -> Callable[[int], MemoryStore | FileStore]:
        tag = uuid.uuid4().hex[:12]
        if backend == "memory":
            ring = MemoryStore(tag, keep=1)

            def reuse(keep: int) -> MemoryStore:
                ring.keep = keep  # one process: "reopening" is the same ring
                return ring

            return reuse
        if backend == "disk":
            path = Path(tmp_path_factory.mktemp("ckpt")) / tag
            return lambda keep: _file(open_store(str(path), keep=keep))
        if backend == "object-fsspec":
            return lambda keep: _fsspec_store(f"/ckpt-{tag}", keep)
        assert gateway is not None
        url, options = gateway.url(f"ckpt-{tag}"), gateway.storage_options()
        return lambda keep: _file(open_store(url, keep=keep, storage_options=options))

    return fresh


def _file(store: object) -> FileStore:
    assert isinstance(store, FileStore)
    return store
