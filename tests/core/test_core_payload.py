import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.core import HEADER_SIZE, CodecId, Payload
from fedstrata.errors import PayloadError


@given(st.sampled_from(list(CodecId)), st.binary(max_size=64), st.binary(max_size=512))
def test_round_trip_exact(codec, params, body):
    p = Payload(codec, params, body)
    raw = p.to_bytes()
    assert len(raw) == p.nbytes == HEADER_SIZE + len(params) + len(body)
    assert Payload.from_bytes(raw) == p


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_raise_payload_error(data):
    try:
        Payload.from_bytes(data)
    except PayloadError:
        return
    # the only way random bytes decode is by forming a fully valid payload
    assert data[:4] == b"FSTR"


@settings(max_examples=300)
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_every_single_byte_mutation_is_detected(pos_seed, xor):
    raw = bytearray(
        Payload(CodecId.DENSE_F32, b"abc", np.arange(16, dtype="<f4").tobytes()).to_bytes()
    )
    pos = pos_seed % len(raw)
    raw[pos] ^= xor
    with pytest.raises(PayloadError):
        Payload.from_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:10], "truncated"),
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:4] + bytes([9]) + b[5:], "version 9"),
        (lambda b: b[:5] + bytes([200]) + b[6:], "unknown codec id 200"),
        (lambda b: b + b"\x00", "length mismatch"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum"),
    ],
)
def test_malformed_payloads_name_the_problem(mutate, message):
    raw = Payload(CodecId.DENSE_F32, b"", b"\x00" * 8).to_bytes()
    with pytest.raises(PayloadError, match=message):
        Payload.from_bytes(mutate(raw))
