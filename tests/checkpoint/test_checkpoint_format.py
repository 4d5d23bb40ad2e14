"""The checkpoint file format: header fields, version, names."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.checkpoint.format import (
    FORMAT_VERSION,
    MAGIC,
    CheckpointInfo,
    checkpoint_key,
    decode,
    encode_header,
    round_of_key,
    round_of_temp_key,
    temp_key,
)
from fedstrata.errors import CheckpointCorrupt, CheckpointError


def _file(round_num: int, blob: bytes) -> bytes:
    digest = hashlib.sha256(blob).hexdigest()
    info = CheckpointInfo(round_num, "disk", checkpoint_key(round_num), len(blob), digest, 1.5)
    return encode_header(info) + blob


@given(round_num=st.integers(0, 10**12 - 1), blob=st.binary(max_size=512))
def test_encode_decode_round_trips(round_num: int, blob: bytes) -> None:
    info, body = decode(checkpoint_key(round_num), "disk", _file(round_num, blob))
    assert body == blob
    assert (info.round, info.size, info.created_unix) == (round_num, len(blob), 1.5)


@given(round_num=st.integers(0, 10**12 - 2))
def test_names_sort_by_round_and_parse_back(round_num: int) -> None:
    key = checkpoint_key(round_num)
    assert round_of_key(key) == round_num
    assert round_of_temp_key(temp_key(round_num, "ab12")) == round_num
    assert round_of_key(temp_key(round_num, "ab12")) is None
    assert round_of_temp_key(key) is None
    assert checkpoint_key(round_num) < checkpoint_key(round_num + 1)


def test_an_unknown_format_version_is_refused() -> None:
    data = bytearray(_file(3, b"blob"))
    struct.pack_into("<H", data, len(MAGIC), FORMAT_VERSION + 1)
    with pytest.raises(CheckpointCorrupt, match="format version"):
        decode(checkpoint_key(3), "disk", bytes(data))


def test_a_header_of_another_round_is_refused() -> None:
    with pytest.raises(CheckpointCorrupt, match="round"):
        decode(checkpoint_key(4), "disk", _file(3, b"blob"))


@pytest.mark.parametrize("round_num", [-1, 10**12, 1.0, True, "3"])
def test_bad_round_numbers_are_refused(round_num: object) -> None:
    with pytest.raises(CheckpointError, match="round_num"):
        checkpoint_key(round_num)  # type: ignore[arg-type]
