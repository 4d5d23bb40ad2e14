"""Issue 15 part 2: the engine snapshot's format round-trips exactly and refuses what
it cannot read."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedstrata.checkpoint.snapshot import MAGIC, SNAPSHOT_VERSION, EngineSnapshot
from fedstrata.core.statepart import StatePart
from fedstrata.errors import CheckpointCorrupt, CheckpointError

NAMES = st.text(alphabet="abcdefghij_0123456789", min_size=1, max_size=8)
JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAMES, inner, max_size=4),
    max_leaves=12,
)
DTYPES = st.sampled_from(
    [np.float32, np.float64, np.int64, np.uint8, np.uint32, np.bool_, np.complex64, ">f4"]
)
ARRAYS = DTYPES.flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=2, max_side=5))
)
PARTS = st.builds(
    StatePart,
    meta=st.dictionaries(NAMES, JSON, max_size=4),
    arrays=st.dictionaries(NAMES, ARRAYS, max_size=4),
)


@settings(max_examples=60, deadline=None)
@given(
    rounds=st.integers(0, 10**6),
    driver=st.sampled_from(["flat", "tree"]),
    parts=st.dictionaries(NAMES, PARTS, max_size=4),
)
def test_to_bytes_from_bytes_round_trips_exactly(
    rounds: int, driver: str, parts: dict[str, StatePart]
) -> None:
    """Law: from_bytes(to_bytes(s)) == s, arrays bit for bit (NaN payloads included)."""
    snap = EngineSnapshot(rounds, driver, "d" * 64, parts)
    back = EngineSnapshot.from_bytes(snap.to_bytes())
    assert back.same_as(snap)
    assert EngineSnapshot.from_bytes(back.to_bytes()).same_as(snap)


def test_nan_and_inf_in_metadata_survive() -> None:
    part = StatePart(meta={"spent": [float("inf"), 1.5]}, arrays={"x": np.array([np.nan])})
    back = EngineSnapshot.from_bytes(EngineSnapshot(1, "flat", "x", {"p": part}).to_bytes())
    assert back.part("p").value("spent") == [float("inf"), 1.5]
    assert np.isnan(back.part("p").array("x")).all()


def _with_header(blob: bytes, change: dict[str, object]) -> bytes:
    """The blob with its JSON header changed (the arrays' bytes kept)."""
    start = len(MAGIC) + 8
    (length,) = struct.unpack("<Q", blob[len(MAGIC) : start])
    header = json.loads(blob[start : start + length])
    header.update(change)
    text = json.dumps(header).encode()
    return MAGIC + struct.pack("<Q", len(text)) + text + blob[start + length :]


def _snap() -> EngineSnapshot:
    part = StatePart(meta={"k": 1}, arrays={"w": np.arange(3.0)})
    return EngineSnapshot(2, "flat", "x", {"engine": part})


def test_an_unknown_version_is_refused_with_both_versions_named() -> None:
    future = _with_header(_snap().to_bytes(), {"version": SNAPSHOT_VERSION + 1})
    with pytest.raises(CheckpointCorrupt, match=rf"version {SNAPSHOT_VERSION + 1}.*reads version"):
        EngineSnapshot.from_bytes(future)


@pytest.mark.parametrize(
    "blob", [b"", b"not a snapshot at all", MAGIC + b"\x01\x02", MAGIC + b"\xff" * 8 + b"{}"]
)
def test_garbage_is_refused(blob: bytes) -> None:
    with pytest.raises(CheckpointCorrupt, match="engine snapshot"):
        EngineSnapshot.from_bytes(blob)


def test_a_header_that_is_not_json_is_refused() -> None:
    blob = MAGIC + struct.pack("<Q", 2) + b"\xff{"
    with pytest.raises(CheckpointCorrupt, match="header is not JSON"):
        EngineSnapshot.from_bytes(blob)


def test_an_index_outside_the_blob_or_a_missing_part_is_named() -> None:
    blob = _snap().to_bytes()
    with pytest.raises(CheckpointCorrupt, match="engine/w lies outside the blob"):
        EngineSnapshot.from_bytes(blob[:-1])
    bad = [
        {"part": "engine", "name": "w", "dtype": "<f8", "shape": [4], "offset": 0, "nbytes": 24}
    ]
    with pytest.raises(CheckpointCorrupt, match="engine/w"):
        EngineSnapshot.from_bytes(_with_header(blob, {"arrays": bad}))
    with pytest.raises(CheckpointCorrupt, match="no part 'optimizer'"):
        EngineSnapshot.from_bytes(blob).part("optimizer")


def test_object_arrays_are_refused_when_written() -> None:
    part = StatePart(arrays={"o": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match="only numbers and booleans"):
        EngineSnapshot(1, "flat", "x", {"p": part}).to_bytes()


@given(wall_s=st.floats(0.0, 1e9, allow_nan=False))
def test_the_runs_wall_time_round_trips(wall_s: float) -> None:
    """Law: the wall time a snapshot carries survives to_bytes / from_bytes exactly."""
    snap = EngineSnapshot(2, "flat", "x", _snap().parts, wall_s)
    assert EngineSnapshot.from_bytes(snap.to_bytes()).wall_s == wall_s


def test_a_snapshot_without_wall_time_reads_as_zero() -> None:
    """A blob written before the header had ``wall_s`` still loads (no time carried)."""
    start = len(MAGIC) + 8
    blob = EngineSnapshot(2, "flat", "x", _snap().parts, 5.0).to_bytes()
    (length,) = struct.unpack("<Q", blob[len(MAGIC) : start])
    header = json.loads(blob[start : start + length])
    del header["wall_s"]
    text = json.dumps(header).encode()
    old = MAGIC + struct.pack("<Q", len(text)) + text + blob[start + length :]
    back = EngineSnapshot.from_bytes(old)
    assert back.wall_s == 0.0
    assert back.same_as(_snap())


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "soon"])
def test_a_bad_wall_time_is_refused(bad: object) -> None:
    with pytest.raises(CheckpointError, match="wall_s"):
        EngineSnapshot(2, "flat", "x", {}, bad)  # type: ignore[arg-type]
    with pytest.raises(CheckpointCorrupt, match="header is invalid"):
        EngineSnapshot.from_bytes(_with_header(_snap().to_bytes(), {"wall_s": bad}))
