"""ChainCodec: round trip per chain, error feedback, shared random-k support, scatter-add."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.compress import ChainCodec, CompressionSpec, randk_support
from fedstrata.compress import quantize as q
from fedstrata.core import HEADER_SIZE, Payload, RoundContext
from fedstrata.core.state import DiskStateStore, MemoryStateStore
from fedstrata.errors import ConfigError, InvalidUpdateError, PayloadError, ShapeError


def make_update(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(size) * rng.exponential(1.0, size)).astype(np.float32)


def ctx(round_idx: int = 0, client: int = 0, root: int = 1):
    return RoundContext(round_idx, root).for_client(client)


specs = st.builds(
    CompressionSpec,
    sparsify=st.sampled_from(["none", "topk", "topk_approx", "randk"]),
    quantize=st.sampled_from([32, 8, 4, 2, 1]),
    block_size=st.sampled_from([1, 7, 64, 256]),
    zstd=st.booleans(),
).map(
    lambda s: CompressionSpec(
        s.sparsify, 1.0 if s.sparsify == "none" else 0.05, s.quantize,
        stochastic=s.quantize < 32 and s.block_size != 7, block_size=s.block_size, zstd=s.zstd,
    )
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(spec=specs, size=st.integers(1, 20_000), seed=st.integers(0, 1000))
def test_decode_matches_reference_within_bound(
    spec: CompressionSpec, size: int, seed: int
) -> None:
    x = make_update(size, seed)
    codec = ChainCodec(spec, size)
    payload = Payload.from_bytes(codec.encode(x, ctx(seed)).to_bytes())
    parsed = codec.parse(payload)
    dense = codec.decode(payload)
    idx = np.arange(size) if parsed.indices is None else parsed.indices
    assert idx.shape[0] == (
        spec.num_kept(size) if spec.sparsify != "topk_approx" else idx.shape[0]
    )
    assert np.unique(idx).shape[0] == idx.shape[0]
    np.testing.assert_array_equal(dense[idx], parsed.values)
    assert np.count_nonzero(np.delete(dense, idx)) == 0
    ref = x[idx].astype(np.float64)
    if spec.sparsify == "randk" and idx.shape[0] < size:
        ref *= size / idx.shape[0]
    peak = float(np.abs(ref).max())
    bound = 0.0 if spec.quantize == 32 else q.error_bound(peak, spec.quantize, spec.stochastic)
    assert np.abs(parsed.values - ref).max() <= bound * (1 + 1e-5) + 1e-6 * peak
    if spec.sparsify == "topk":
        dropped = np.abs(np.delete(x, idx))
        assert dropped.size == 0 or np.abs(x[idx]).min() >= dropped.max()


def test_header_and_parameter_overhead_is_small() -> None:
    for spec in [CompressionSpec(), CompressionSpec(sparsify="randk", density=0.01, quantize=8)]:
        payload = ChainCodec(spec, 10_000_000).encode(make_update(10_000_000, 0), ctx())
        assert HEADER_SIZE + len(payload.params) <= 50


def test_accumulate_is_weighted_scatter_add() -> None:
    size = 50_000
    codec = ChainCodec(CompressionSpec(sparsify="topk", density=0.01, quantize=8), size)
    out = np.random.default_rng(0).standard_normal(size)
    before = out.copy()
    payload = codec.encode(make_update(size, 1), ctx())
    codec.accumulate(payload, out, 2.5)
    np.testing.assert_allclose(out, before + 2.5 * codec.decode(payload).astype(np.float64))


@pytest.mark.parametrize("density", [0.01, 0.6])
def test_randk_support_is_shared_by_the_cohort(density: float) -> None:
    size = 10_000
    codec = ChainCodec(CompressionSpec(sparsify="randk", density=density, quantize=8), size)
    supports = [
        codec.parse(codec.encode(make_update(size, c), ctx(3, c))).indices for c in range(4)
    ]
    for s in supports[1:]:
        np.testing.assert_array_equal(s, supports[0])
    other = codec.parse(codec.encode(make_update(size, 0), ctx(4, 0))).indices
    assert not np.array_equal(other, supports[0])
    assert supports[0] is not None
    assert supports[0].shape[0] == round(density * size)
    assert np.array_equal(supports[0], randk_support_from(codec, ctx(3, 0)))


def randk_support_from(codec: ChainCodec, c) -> np.ndarray:
    from fedstrata.core.context import SERVER, derive_seed

    seed = derive_seed(c.round.root_seed, c.round_idx, SERVER, "randk")
    return randk_support(seed, codec.size, codec.spec.num_kept(codec.size))


def test_randk_without_feedback_is_unbiased() -> None:
    size = 64
    x = make_update(size, 5)
    codec = ChainCodec(CompressionSpec(sparsify="randk", density=0.25, quantize=32), size)
    total = np.zeros(size)
    rounds = 3000
    for r in range(rounds):
        codec.accumulate(codec.encode(x, ctx(r)), total, 1.0 / rounds)
    # per-coordinate sd of one round is |x| * sqrt(3); the mean has sd |x|*sqrt(3/rounds)
    assert np.all(np.abs(total - x) <= 5 * np.abs(x) * np.sqrt(3 / rounds) + 1e-6)


@pytest.mark.parametrize(
    "spec",
    [
        CompressionSpec(sparsify="topk", density=0.02, quantize=8, error_feedback=True),
        CompressionSpec(sparsify="topk_approx", density=0.02, quantize=4, error_feedback=True),
        CompressionSpec(sparsify="randk", density=0.05, quantize=2, stochastic=True,
                        error_feedback=True),
        CompressionSpec(quantize=1, error_feedback=True),
    ],
)  # fmt: skip
def test_error_feedback_conserves_the_sum(spec: CompressionSpec, tmp_path: Path) -> None:
    size, rounds = 5000, 12
    store = DiskStateStore(tmp_path)
    codec = ChainCodec(spec, size, store)
    sent, inputs = np.zeros(size), np.zeros(size)
    for r in range(rounds):
        x = make_update(size, r)
        inputs += x
        codec.accumulate(codec.encode(x, ctx(r, client=7)), sent, 1.0)
    residual = store.get(7, "ef_residual")
    assert residual is not None
    np.testing.assert_allclose(sent + residual, inputs, atol=1e-4 * np.abs(inputs).max())
    assert store.get(8, "ef_residual") is None  # state is per client


def test_error_feedback_eventually_sends_small_coordinates() -> None:
    size = 1000
    codec = ChainCodec(
        CompressionSpec(sparsify="topk", density=0.01, error_feedback=True), size,
        MemoryStateStore(),
    )  # fmt: skip
    x = np.full(size, 1e-3, dtype=np.float32)
    x[0] = 1.0
    seen = np.zeros(size, dtype=bool)
    for r in range(200):
        seen[codec.parse(codec.encode(x, ctx(r))).indices] = True
    assert seen.all()


def test_configuration_and_input_errors() -> None:
    spec = CompressionSpec(quantize=8, error_feedback=True)
    with pytest.raises(ConfigError, match="state_store"):
        ChainCodec(spec, 10)
    with pytest.raises(ConfigError, match="size"):
        ChainCodec(CompressionSpec(), 0)
    codec = ChainCodec(CompressionSpec(quantize=8), 10)
    with pytest.raises(ShapeError, match="shape"):
        codec.encode(np.zeros(11, np.float32), ctx())
    with pytest.raises(ShapeError, match="float32"):
        codec.encode(np.zeros(10, np.float64), ctx())  # type: ignore[arg-type]
    bad = np.zeros(10, np.float32)
    bad[3] = np.nan
    with pytest.raises(InvalidUpdateError, match="NaN"):
        codec.encode(bad, ctx())
    payload = codec.encode(np.ones(10, np.float32), ctx())
    with pytest.raises(ShapeError, match="float64"):
        codec.accumulate(payload, np.zeros(10, np.float32), 1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="weight"):
        codec.accumulate(payload, np.zeros(10), float("nan"))
    with pytest.raises(PayloadError, match="coordinates"):
        ChainCodec(CompressionSpec(quantize=8), 11).decode(payload)


def test_decoder_reads_the_chain_from_the_payload() -> None:
    size = 3000
    x = make_update(size, 2)
    server = ChainCodec(CompressionSpec(), size)
    for spec in [CompressionSpec(quantize=4), CompressionSpec(sparsify="topk", density=0.1)]:
        payload = ChainCodec(spec, size).encode(x, ctx())
        np.testing.assert_array_equal(
            server.decode(payload), ChainCodec(spec, size).decode(payload)
        )


def test_zstd_shrinks_compressible_bodies() -> None:
    x = np.zeros(100_000, dtype=np.float32)
    x[::10] = 1.0
    raw = ChainCodec(CompressionSpec(quantize=8), x.shape[0]).encode(x, ctx())
    packed = ChainCodec(CompressionSpec(quantize=8, zstd=True), x.shape[0]).encode(x, ctx())
    assert packed.nbytes < raw.nbytes / 10
