"""One conformance suite for every codec: each preset's ChainCodec and DenseCodec."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from fedstrata.compress import PRESETS, ChainCodec
from fedstrata.core import Payload, RoundContext
from fedstrata.core.payload import CodecId
from fedstrata.core.state import MemoryStateStore
from fedstrata.errors import PayloadError
from fedstrata.pipeline import Codec, DenseCodec

SIZE = 20_000

FACTORIES: dict[str, Callable[[], Codec]] = {
    "dense": lambda: DenseCodec(SIZE),
    **{
        f"preset:{name}": (lambda s=spec: ChainCodec(s, SIZE, MemoryStateStore()))
        for name, spec in PRESETS.items()
    },
}


@pytest.fixture(params=sorted(FACTORIES))
def codec(request: pytest.FixtureRequest) -> Codec:
    return FACTORIES[request.param]()


def _update(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SIZE).astype(np.float32)


def test_codec_protocol(codec: Codec) -> None:
    assert isinstance(codec.name, str)
    assert codec.name


def test_wire_roundtrip_and_decode_shape(codec: Codec) -> None:
    ctx = RoundContext(2, 9).for_client(4)
    payload = codec.encode(_update(0), ctx)
    again = Payload.from_bytes(payload.to_bytes())
    assert again == payload
    dense = codec.decode(again)
    assert dense.shape == (SIZE,)
    assert dense.dtype == np.float32
    assert np.isfinite(dense).all()
    assert payload.nbytes <= DenseCodec(SIZE).nbytes() + 32  # chain header: a few dozen bytes


def test_sum_of_accumulates_equals_sum_of_decodes(codec: Codec) -> None:
    payloads = [codec.encode(_update(c), RoundContext(0, 1).for_client(c)) for c in range(5)]
    weights = [1.0, 2.0, 0.5, 3.0, 0.0]
    out = np.zeros(SIZE)
    for p, w in zip(payloads, weights, strict=True):
        codec.accumulate(p, out, w)
    ref = sum(
        w * codec.decode(p).astype(np.float64) for p, w in zip(payloads, weights, strict=True)
    )
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-9)
    # order of accumulation does not matter (the sum is associative up to float64 rounding)
    out2 = np.zeros(SIZE)
    for p, w in reversed(list(zip(payloads, weights, strict=True))):
        codec.accumulate(p, out2, w)
    np.testing.assert_allclose(out, out2, rtol=1e-12, atol=1e-9)


def test_decode_error_is_bounded_relative_to_input(codec: Codec) -> None:
    x = _update(3)
    err = codec.decode(codec.encode(x, RoundContext(0, 1).for_client(0))) - x
    # every codec: the error is bounded by the input's scale (random-k: by its 1/density)
    factor = 1.0 / 0.01 + 1 if "randk" in codec.name else 2.0
    assert np.abs(err).max() <= factor * np.abs(x).max()


def _assert_rejected(codec: Codec, bad: list[Payload]) -> None:
    out = np.ones(SIZE)
    for p in bad:
        with pytest.raises(PayloadError):
            codec.accumulate(p, out, 1.0)
        np.testing.assert_array_equal(out, np.ones(SIZE))
        with pytest.raises(PayloadError):
            codec.decode(p)


def test_malformed_payload_raises_and_leaves_sum_unchanged(codec: Codec) -> None:
    payload = codec.encode(_update(1), RoundContext(0, 1).for_client(0))
    _assert_rejected(
        codec,
        [
            Payload(payload.codec, payload.params, payload.body[:-1]),
            Payload(payload.codec, payload.params, payload.body + b"\x00"),
            Payload(CodecId.RING_U32, payload.params, payload.body),
        ],
    )


def test_unexpected_parameter_bytes_are_rejected(codec: Codec) -> None:
    payload = codec.encode(_update(1), RoundContext(0, 1).for_client(0))
    _assert_rejected(codec, [Payload(payload.codec, payload.params + b"\x00", payload.body)])
