"""Streamed aggregation: zero-copy broadcast, chunk-wise dense folding, in-place apply."""

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.aggregation import WeightedMean
from fedstrata.algorithms.server import EmptyState, FedAvg
from fedstrata.api import run
from fedstrata.core.payload import CodecId, Payload
from fedstrata.errors import PayloadError
from fedstrata.pipeline.dense import DenseCodec
from fedstrata.runtime.streaming import Broadcast, DenseFold, apply_in_place


def _vec(n, seed):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


@given(n=st.integers(1, 300), chunk=st.integers(1, 97))
def test_broadcast_chunks_are_the_payload_bytes(n, chunk):
    params = _vec(n, n)
    want = Payload(CodecId.MODEL_F32, b"", params.tobytes()).to_bytes()
    blob = Broadcast.of_model(params)
    parts = list(blob.chunks(chunk))
    assert blob.nbytes == len(want)
    assert b"".join(parts) == want
    assert all(len(p) == chunk for p in parts[:-1])


@settings(max_examples=40)
@given(n=st.integers(1, 200), chunk=st.integers(1, 61), w=st.floats(0.1, 50))
def test_dense_fold_equals_accumulate_for_any_chunking(n, chunk, w):
    x = _vec(n, chunk)
    data = DenseCodec(n).encode(x, None).to_bytes()  # type: ignore[arg-type]
    agg = WeightedMean(sum_dtype="float32")
    ref = agg.accumulate(agg.init(n), x, w)
    out = np.full(n, 0.0, np.float32)
    fold = DenseFold(out, w, len(data))
    for i in range(0, len(data), chunk):
        fold.add(data[i : i + chunk])
    assert fold.finish() == len(data)
    assert out.tobytes() == ref.weighted_sum.tobytes()


def _dense(x):
    return DenseCodec(x.size).encode(x, None).to_bytes()  # type: ignore[arg-type]


def test_dense_fold_refuses_bad_uploads():
    x = _vec(16, 1)
    data = _dense(x)
    with pytest.raises(PayloadError, match="declares"):
        DenseFold(np.zeros(16, np.float32), 1.0, len(data) + 4)
    fold = DenseFold(np.zeros(16, np.float32), 1.0, len(data))
    fold.add(data[:40])
    assert fold.touched
    with pytest.raises(PayloadError, match="ended after"):
        fold.finish()  # truncated: the caller voids the round
    bad = bytearray(data)
    bad[-1] ^= 1
    fold = DenseFold(np.zeros(16, np.float32), 1.0, len(data))
    fold.add(bytes(bad))
    with pytest.raises(PayloadError, match="checksum"):
        fold.finish()
    y = x.copy()
    y[3] = np.nan
    with pytest.raises(PayloadError, match="NaN"):
        DenseFold(np.zeros(16, np.float32), 1.0, len(data)).add(_dense(y))
    model = Payload(CodecId.MODEL_F32, b"", x.tobytes()).to_bytes()
    with pytest.raises(PayloadError, match="codec"):
        DenseFold(np.zeros(16, np.float32), 1.0, len(model)).add(model)


@pytest.mark.parametrize("lr", [1.0, 0.5])
def test_apply_in_place_equals_finalize_then_step(lr):
    agg, opt = WeightedMean(sum_dtype="float32"), FedAvg(server_lr=lr)
    params = _vec(50, 0)
    state = agg.init(50)
    for k in range(3):
        agg.accumulate(state, _vec(50, k + 1), k + 1.0)
    want, _ = opt.step(params, agg.finalize(state), EmptyState())
    got = apply_in_place(params, state, opt)
    assert got.tobytes() == want.tobytes()


def test_streamed_federation_with_tiny_chunks_matches_the_simulator(
    small_config, small_deployment, federation
):
    sim = run(small_config).simulation
    # every model streams; 1001-byte chunks split floats across chunks
    result, _ = asyncio.run(federation(small_deployment, chunk_bytes=1001, stream_min_bytes=1))
    assert all(len(r.outcome.accepted) == 5 and r.voided is None for r in result.rounds)
    assert [r.bytes_up for r in result.rounds] == [r.bytes_up for r in sim.rounds]
    assert [r.bytes_down for r in result.rounds] == [r.bytes_down for r in sim.rounds]
    # float32 sum instead of float64: equal within float32 rounding, not bit for bit
    np.testing.assert_allclose(result.params, sim.params, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(result.params, small_deployment.initial_params())
