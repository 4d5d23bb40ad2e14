"""Issue 15 part 2: the engine snapshot's format round-trips exactly and refuses what
it cannot read."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedstrata.checkpoint.snapshot import SNAPSHOT_VERSION, EngineSnapshot
from fedstrata.core.statepart import StatePart
from fedstrata.errors import CheckpointCorrupt

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
DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.uint32, np.bool_])
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


def _rewrite_header(blob: bytes, change: dict[str, object]) -> bytes:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    header = json.loads(members["__header__"].tobytes())
    header.update(change)
    members["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **members)
    return buf.getvalue()


def test_an_unknown_version_is_refused_with_both_versions_named() -> None:
    blob = EngineSnapshot(3, "flat", "x", {}).to_bytes()
    future = _rewrite_header(blob, {"version": SNAPSHOT_VERSION + 1})
    with pytest.raises(CheckpointCorrupt, match=rf"version {SNAPSHOT_VERSION + 1}.*reads version"):
        EngineSnapshot.from_bytes(future)


@pytest.mark.parametrize(
    "blob",
    [b"", b"not a zip at all", b"PK\x03\x04truncated"],
)
def test_garbage_is_refused(blob: bytes) -> None:
    with pytest.raises(CheckpointCorrupt, match="not an engine snapshot"):
        EngineSnapshot.from_bytes(blob)


def test_a_missing_member_or_part_is_named() -> None:
    part = StatePart(arrays={"w": np.arange(3.0)})
    blob = EngineSnapshot(2, "flat", "x", {"engine": part}).to_bytes()
    src = zipfile.ZipFile(io.BytesIO(blob))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            if info.filename != "engine/w.npy":
                dst.writestr(info, src.read(info))
    with pytest.raises(CheckpointCorrupt, match="engine/w"):
        EngineSnapshot.from_bytes(buf.getvalue())
    with pytest.raises(CheckpointCorrupt, match="no part 'optimizer'"):
        EngineSnapshot.from_bytes(blob).part("optimizer")


def test_a_header_that_is_not_json_is_refused() -> None:
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(b"\xff{", dtype=np.uint8))
    with pytest.raises(CheckpointCorrupt, match="header"):
        EngineSnapshot.from_bytes(buf.getvalue())
