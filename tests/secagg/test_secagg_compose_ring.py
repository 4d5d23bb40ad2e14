"""Issue 12 part 4: the ring codec carries compression, noise shares and settlement
weights; the aggregator withholds a sum the accounted noise does not cover."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.compress import randk_support
from fedstrata.core.context import RoundContext
from fedstrata.core.metrics import SecAggStats
from fedstrata.core.state import MemoryStateStore
from fedstrata.errors import ConfigError
from fedstrata.privacy.distributed import NoiseShares
from fedstrata.secagg import (
    RingCodec,
    RingSpec,
    SecAggAggregator,
    SecAggOptions,
    fit_modulus,
    lift,
    quantize_to_ring,
    secagg_components,
)
from fedstrata.secagg.codec import check_ring_fits, ring_bits
from fedstrata.secagg.feedback import RESIDUAL_KEY
from fedstrata.secagg.ring import from_ring, to_ring
from fedstrata.secagg.ring_input import weighted_input

SIZE = 200


def ctx(round_idx: int, client_id: int):
    return RoundContext(round_idx, 7).for_client(client_id)


def test_fit_modulus_packs_eight_bit_inputs_of_200_clients_in_16_bits() -> None:
    """Issue 12 part 4: a ring fitted to the cohort: 200 x 127 needs 16 bits with the
    sign; with a noise bound of 1260 it needs 20 bits, packed at exactly that width."""
    spec = fit_modulus(RingSpec(input_bits=8, density=0.1), 200)
    assert (spec.modulus_bits, spec.body_bytes(1000)) == (16, 2000)
    noisy = fit_modulus(RingSpec(input_bits=8, noise_bound=1260), 200)
    assert (noisy.modulus_bits, noisy.body_bytes(480)) == (20, 1200)
    assert fit_modulus(RingSpec(input_bits=16), 200).modulus_bits == 24
    assert fit_modulus(RingSpec(input_bits=16), 600).modulus_bits == 26
    with pytest.raises(ConfigError, match="more than 32"):
        fit_modulus(RingSpec(input_bits=30), 200)
    codec = RingCodec(spec, 10_000, randk_support)
    assert codec.nbytes() * 19 < 4 * 10_000  # > 19x below dense float32


def _ring_total(rows: list[np.ndarray], weights: list[int], bits: int) -> np.ndarray:
    """The masked protocol's result: the ``[w q, w]`` inputs summed in ``Z / 2^bits``."""
    total = np.zeros(rows[0].shape[0] + 1, dtype=np.uint32)
    for q, w in zip(rows, weights, strict=True):
        np.add(total, weighted_input(to_ring(q, bits), w, bits), out=total)
    return from_ring(total, bits)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 60), min_size=1, max_size=50),
    st.integers(1, 1 << 16),
    st.integers(0, 2**32 - 1),
)
def test_ring_bits_never_overflow_on_worst_case_inputs_and_are_minimal(
    weights: list[int], bound: int, seed: int
) -> None:
    """The derived width holds any weighted sum of elements in ``[-bound, bound]``
    exactly (both extremes and random ones); one bit less wraps an extreme."""
    total_weight = sum(weights)
    bits = ring_bits(total_weight, bound)
    rng = np.random.default_rng(seed)
    rows = [
        np.concatenate([[bound, -bound], rng.integers(-bound, bound, 4, endpoint=True)])
        for _ in weights
    ]
    got = _ring_total(rows, weights, bits)
    exact = np.sum([q * w for q, w in zip(rows, weights, strict=True)], axis=0)
    np.testing.assert_array_equal(got[:-1], exact)
    assert got[-1] == total_weight
    assert got[0] == total_weight * bound
    assert got[1] == -total_weight * bound
    if bits > 1:
        narrow = _ring_total([np.array([bound])] * len(weights), weights, bits - 1)
        assert narrow[0] != total_weight * bound  # the extreme wraps one bit lower


def test_check_ring_fits_refuses_a_ring_that_could_wrap() -> None:
    spec = RingSpec(input_bits=8, noise_bound=1260, modulus_bits=19)  # 200 x 1387 needs 20
    with pytest.raises(ConfigError, match="needs a 20-bit ring, modulus_bits is 19"):
        check_ring_fits(spec, 200)
    check_ring_fits(fit_modulus(spec, 200), 200)
    with pytest.raises(ConfigError, match="total_weight >= 1"):
        ring_bits(0, 5)


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 12), st.sampled_from([8, 12, 16]), st.integers(0, 2**31 - 1))
def test_packed_ring_sum_matches_float_mean_within_the_bound(n: int, bits: int, seed: int) -> None:
    """Issue 12 part 4: encode -> (protocol) sum -> decode on a fitted, packed ring
    equals the float mean on the shared support within the stochastic bound clip / L."""
    spec = fit_modulus(RingSpec(clip=1.0, input_bits=bits, density=0.5), n)
    codec, agg = secagg_components(spec, SecAggOptions(n, dropout_rate=0.0), SIZE, randk_support)
    rng = np.random.default_rng(seed)
    vectors = [rng.uniform(-1, 1, SIZE).astype(np.float32) for _ in range(n)]
    state = agg.init(SIZE)
    for i, v in enumerate(vectors):
        payload = codec.encode(v, ctx(0, i))
        assert len(payload.body) == spec.body_bytes(codec.count) < 4 * codec.count
        state = agg.accumulate_payload(state, codec, payload, 1.0, client_id=i)
    got = agg.finalize(state)
    support = codec.support(codec.support_seed(7, 0))
    mean = np.mean(vectors, axis=0)[support] * (SIZE / codec.count)
    bound = spec.clip / spec.levels * (SIZE / codec.count) + 1e-6
    assert np.abs(got[support] - mean).max() <= bound


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_error_feedback_residual_telescopes(rounds: int, seed: int) -> None:
    """Issue 12 part 4: with error feedback what a client sent over the rounds plus its
    final residual equals the sum of its updates (nothing is lost, only delayed)."""
    spec = RingSpec(clip=1.0, input_bits=8, density=0.2, error_feedback=True)
    store = MemoryStateStore()
    codec = RingCodec(spec, SIZE, randk_support, state_store=store)
    rng = np.random.default_rng(seed)
    inputs, sent = np.zeros(SIZE), np.zeros(SIZE)
    for r in range(rounds):
        x = rng.uniform(-0.5, 0.5, SIZE).astype(np.float32)
        inputs += x
        sent += codec.decode(codec.encode(x, ctx(r, 3)))  # not rescaled by size / k
    residual = store.get(3, RESIDUAL_KEY)
    assert residual is not None
    np.testing.assert_allclose(sent + residual, inputs, atol=1e-4)
    assert not codec.decode(codec.encode(np.zeros(SIZE, np.float32), ctx(9, 4))).any()


def test_noise_shares_are_added_before_masking_and_sum_to_the_target_std() -> None:
    """Issue 12 part 4: every client's ring input carries its share (no un-noised
    input exists); ``n_min`` shares sum to std sigma * sensitivity."""
    n_min, target = 8, 400.0
    shares = NoiseShares("discrete_gaussian", (target / math.sqrt(n_min),), 20_000)
    spec = RingSpec(clip=1.0, input_bits=8, noise_bound=shares.bound)
    codec = RingCodec(spec, 4000, noise_fn=shares)
    zero = np.zeros(4000, dtype=np.float32)
    plain = quantize_to_ring(zero, spec, None)
    total = np.zeros(4000, dtype=np.int64)
    for i in range(n_min):
        msg = codec.decode_ring(codec.encode(zero, ctx(0, i)))
        assert not np.array_equal(msg.values, plain)
        total += lift(msg.values, spec.modulus_bits)
    assert total.std() == pytest.approx(target, rel=0.05)
    assert abs(total.mean()) < 4 * target / math.sqrt(4000)


def test_noise_shares_refuse_a_std_below_one_step() -> None:
    with pytest.raises(ConfigError, match="std >= 1"):
        NoiseShares("skellam", (0.5,), 10)
    with pytest.raises(ConfigError, match="noise_bound"):
        RingCodec(RingSpec(), 10, noise_fn=NoiseShares("skellam", (2.0,), 40))


def test_settlement_weights_are_rounded_into_the_ring() -> None:
    """Issue 12 part 4: fractional (partial-work) weights become the nearest integers
    >= 1 the ring carries; the aggregate is their weighted mean within clip / L."""
    spec = RingSpec(clip=1.0, input_bits=16, stochastic=False)
    codec = RingCodec(spec, SIZE)
    agg = SecAggAggregator(codec, SecAggOptions(4, max_weight=100, round_weights=True))
    rng = np.random.default_rng(3)
    vectors = [rng.uniform(-1, 1, SIZE).astype(np.float32) for _ in range(4)]
    weights = [40.0 * 0.5, 40.0, 33.0 * 0.25, 10.0 * 0.01]  # examples x work done
    state = agg.init(SIZE)
    for i, (v, w) in enumerate(zip(vectors, weights, strict=True)):
        state = agg.accumulate_payload(state, codec, codec.encode(v, ctx(0, i)), w, client_id=i)
    assert state.weights == [20, 40, 8, 1]
    ints = np.array(state.weights, dtype=np.float64)
    want = (ints[:, None] * np.stack(vectors)).sum(axis=0) / ints.sum()
    assert np.abs(agg.finalize(state) - want).max() <= spec.clip / spec.levels
    exact = np.array(weights)[:, None] * np.stack(vectors)
    rel = max(0.5 / w for w in state.weights[:3])
    assert np.abs(want - exact.sum(axis=0) / sum(weights)).max() < 2 * rel + 0.2


def test_too_few_survivors_release_nothing(caplog) -> None:
    """Issue 12 part 4: below min_survivors the sum is never unmasked (zero update)."""
    codec = RingCodec(RingSpec(), SIZE)
    agg = SecAggAggregator(codec, SecAggOptions(4, min_survivors=3, dropout_rate=0.0))
    state = agg.init(SIZE)
    for i in range(2):
        payload = codec.encode(np.ones(SIZE, np.float32) * 0.5, ctx(0, i))
        state = agg.accumulate_payload(state, codec, payload, 1.0, client_id=i)
    np.testing.assert_array_equal(agg.finalize(state), 0.0)
    assert agg.last_stats is None
    assert agg.finish(0, 2, None) == SecAggStats(withheld=1)
    assert "not unmasked" in caplog.text
