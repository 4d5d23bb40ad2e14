"""Secure aggregation inside the simulator: ring codec + SecAggAggregator."""

from __future__ import annotations

import importlib.util
import logging
import struct
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedstrata.aggregation import Aggregator, WeightedMean
from fedstrata.algorithms import FedAvg
from fedstrata.compress import randk_support
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core import ClientContext, CodecId, LocalPlan, Payload, RoundContext
from fedstrata.errors import (
    AggregationError,
    ConfigError,
    InvalidUpdateError,
    PayloadError,
    SecAggError,
)
from fedstrata.pipeline import DenseCodec, Pipeline
from fedstrata.secagg import (
    RingCodec,
    RingSpec,
    RingState,
    SecAggAggregator,
    SecAggOptions,
    lift,
    secagg_components,
)
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
    Simulation,
)


def _load_sim_fakes() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "sim" / "simfakes.py"
    spec = importlib.util.spec_from_file_location("secagg_sim_fakes", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


FAKES = _load_sim_fakes()
N = 12  # FakeData's clients; each holds 3..6 examples
SIZE = 4
_STATIC: Aggregator[RingState] = SecAggAggregator(
    RingCodec(RingSpec(), SIZE), SecAggOptions(expected_cohort=N)
)


def ctx(round_idx: int = 0, client_id: int = 0, root: int = 5) -> ClientContext:
    return RoundContext(round_idx, root).for_client(client_id)


def components(
    *,
    secure: bool = True,
    density: float = 1.0,
    cohort: int = N,
    max_weight: int = 6,
    clip: float = 2.0,
) -> tuple[RingCodec, SecAggAggregator]:
    spec = RingSpec(clip=clip, input_bits=16, density=density)
    options = SecAggOptions(cohort, max_weight=max_weight, root_seed=5, secure=secure)
    return secagg_components(spec, options, SIZE, randk_support if density < 1 else None)


def simulate(factory, codec=None, aggregator=None, *, rounds=3, workers=0, dense=False):
    data = FAKES.FakeData()
    pipeline = Pipeline([], codec) if codec is not None else None
    if dense:
        pipeline = Pipeline([], DenseCodec(SIZE))
    job = ClientJob(trainer_factory=factory, data=data, root_seed=5, pipeline=pipeline)
    executor = (
        InProcessExecutor(job, SIZE) if workers == 0 else ProcessExecutor(job, SIZE, workers)
    )
    trainer = factory()
    sim = Simulation(
        settings=SimSettings(rounds, LocalPlan(lr=0.5), root_seed=5),
        coordinator=RoundCoordinator(RoundPolicy(None, 1, None, 5)),
        trainer=trainer,
        executor=executor,
        client_sizes=data.client_sizes(),
        test_data=data.client(0),
        profiles=ProfileTable.generate(N, ProfileDistribution(), np.random.default_rng(0)),
        server_optimizer=FedAvg(),
        aggregator=aggregator or WeightedMean(),
        pipeline=pipeline,
        hooks=(aggregator,) if isinstance(aggregator, SecAggAggregator) else (),
    )
    try:
        return sim.run(trainer.initial_params(1))
    finally:
        executor.close()


# --- the simulator -----------------------------------------------------------------


@pytest.mark.parametrize("density", [1.0, 0.5])
def test_secure_round_equals_plaintext_fixed_point_exactly(density: float) -> None:
    codec, secure = components(density=density)
    plain_codec, plain = components(secure=False, density=density)
    got = simulate(FAKES.FakeFactory(), codec, secure)
    ref = simulate(FAKES.FakeFactory(), plain_codec, plain)
    assert got.params.tobytes() == ref.params.tobytes()
    assert [m.accuracy for m in got.rounds] == [m.accuracy for m in ref.rounds]
    stats = got.rounds[-1].secagg
    assert stats is not None
    assert stats.dropped == 0
    assert stats.protocol_s > 0
    assert stats.bandwidth_expansion > 1.0
    assert secure.last_stats is not None
    assert secure.last_stats.accepted == N


def test_secure_round_is_close_to_float_fedavg() -> None:
    codec, agg = components(clip=16.0)  # FakeTrainer's deltas reach ~6: no clipping
    got = simulate(FAKES.FakeFactory(), codec, agg)
    ref = simulate(FAKES.FakeFactory(), dense=True)
    step = 16.0 / RingSpec().levels  # clip / L: the per-coordinate quantization bound
    np.testing.assert_allclose(got.params, ref.params, atol=3 * step)  # 3 rounds
    assert not np.array_equal(got.params, ref.params)  # it did quantize


def test_process_workers_give_the_same_model() -> None:
    codec, agg = components()
    ref = simulate(FAKES.FakeFactory(), codec, agg)
    codec2, agg2 = components()
    got = simulate(FAKES.FakeFactory(), codec2, agg2, workers=1)
    assert got.params.tobytes() == ref.params.tobytes()


@pytest.mark.parametrize(
    "factory", [FAKES.FakeFactory(nan_clients=(3,)), FAKES.FakeFactory(raise_clients=(3, 7))]
)
def test_failed_clients_are_recovered_as_dropouts(factory) -> None:
    codec, secure = components()
    plain_codec, plain = components(secure=False)
    got = simulate(factory, codec, secure, rounds=2)
    ref = simulate(factory, plain_codec, plain, rounds=2)
    failed = len(factory.nan_clients) + len(factory.raise_clients)
    assert got.params.tobytes() == ref.params.tobytes()
    assert np.isfinite(got.params).all()
    assert all(m.clients_failed == failed for m in got.rounds)
    assert secure.last_stats is not None
    assert secure.last_stats.accepted == N - failed
    assert got.rounds[-1].secagg.dropped == failed


def test_too_many_dropouts_fail_the_round_with_secagg_error() -> None:
    codec, agg = components(cohort=N)
    state = agg.init(SIZE)
    for cid in range(2):
        payload = codec.encode(np.full(SIZE, 0.1, np.float32), ctx(0, cid))
        agg.accumulate_payload(state, codec, payload, 1.0, client_id=cid)
    with pytest.raises(SecAggError):
        agg.finalize(state)


# --- the aggregator ----------------------------------------------------------------


def fill(codec, agg, vectors, weights, round_idx=0):
    state = agg.init(SIZE)
    payloads = [codec.encode(v, ctx(round_idx, i)) for i, v in enumerate(vectors)]
    for i, (p, w) in enumerate(zip(payloads, weights, strict=True)):
        agg.accumulate_payload(state, codec, p, w, client_id=i, metrics={"train_loss": i})
    return state, payloads


def test_weights_fold_into_the_ring_exactly() -> None:
    rng = np.random.default_rng(0)
    vectors = [rng.uniform(-3, 3, SIZE).astype(np.float32) for _ in range(N)]
    weights = [float(w) for w in rng.integers(0, 7, N)]
    weights[0] = 3.0  # total weight > 0
    codec, agg = components()
    state, payloads = fill(codec, agg, vectors, weights)
    q = [lift(codec.decode_ring(p).values, 32) for p in payloads]
    num = sum(int(w) * qi for w, qi in zip(weights, q, strict=True))
    expected = (num / (codec.spec.scale * sum(weights))).astype(np.float32)
    assert agg.finalize(state).tobytes() == expected.tobytes()
    want_loss = sum(w * i for i, w in enumerate(weights)) / sum(weights)
    assert agg.finalize_metrics(state)["train_loss"] == pytest.approx(want_loss)


def test_weights_above_the_cap_are_capped_with_a_warning(caplog) -> None:
    codec, agg = components(max_weight=2, cohort=2)
    vectors = [np.full(SIZE, 0.5, np.float32), np.full(SIZE, -0.5, np.float32)]
    with caplog.at_level(logging.WARNING, logger="fedstrata.secagg.aggregator"):
        state, _ = fill(codec, agg, vectors, [5.0, 2.0])
    assert state.weights == [2, 2]
    assert state.capped == 1
    assert "capped" in caplog.text
    np.testing.assert_allclose(agg.finalize(state), 0.0, atol=1e-4)


def test_non_integer_weight_is_rejected() -> None:
    codec, agg = components()
    state, _ = fill(codec, agg, [np.zeros(SIZE, np.float32)], [1.0])
    payload = codec.encode(np.zeros(SIZE, np.float32), ctx(0, 1))
    with pytest.raises(InvalidUpdateError, match="integer weight"):
        agg.accumulate_payload(state, codec, payload, 1.5, client_id=1)
    assert len(state.inputs) == 1


def test_dense_accumulate_matches_nearest_rounding_payloads() -> None:
    spec = RingSpec(clip=2.0, stochastic=False)
    codec = RingCodec(spec, SIZE)
    agg = SecAggAggregator(codec, SecAggOptions(3, max_weight=6))
    vectors = [np.linspace(-1, 1, SIZE, dtype=np.float32) * i for i in range(3)]
    via_payload, _ = fill(codec, agg, vectors, [1.0, 2.0, 3.0])
    via_vector = agg.init(SIZE)
    for i, v in enumerate(vectors):
        agg.accumulate(via_vector, v, float(i + 1), client_id=i)
    assert agg.finalize(via_vector).tobytes() == agg.finalize(via_payload).tobytes()


def _tamper(payload: Payload, *, params: bytes | None = None, body: bytes | None = None):
    return Payload(
        payload.codec,
        payload.params if params is None else params,
        payload.body if body is None else body,
    )


def _bad_payloads(codec: RingCodec, good: Payload) -> dict[str, Payload]:
    out_of_range = np.frombuffer(good.body, "<u4").copy()
    out_of_range[1] = 1 << 20  # above L = 2^15 - 1
    fields = list(struct.unpack("<BBBBdIIIIQ", good.params))
    fields[1] = 12  # input_bits differs from the codec's
    return {
        "short body": _tamper(good, body=good.body[:-4]),
        "out of range": _tamper(good, body=out_of_range.astype("<u4").tobytes()),
        "params": _tamper(good, params=struct.pack("<BBBBdIIIIQ", *fields)),
        "codec": Payload(CodecId.DENSE_F32, b"", good.body),
        "round": codec.encode(np.zeros(SIZE, np.float32), ctx(7, 9)),
    }


def test_malformed_payloads_raise_payload_error_without_touching_the_sum() -> None:
    codec, agg = components()
    vectors = [np.full(SIZE, 0.25 * i, np.float32) for i in range(3)]
    state, _ = fill(codec, agg, vectors, [1.0, 1.0, 1.0])
    before = [v.copy() for v in state.inputs]
    good = codec.encode(np.full(SIZE, 0.5, np.float32), ctx(0, 3))
    for name, bad in _bad_payloads(codec, good).items():
        with pytest.raises(PayloadError):
            agg.accumulate_payload(state, codec, bad, 1.0, client_id=3)
        assert len(state.inputs) == 3, name
        assert all(np.array_equal(a, b) for a, b in zip(before, state.inputs, strict=True))
    with pytest.raises(PayloadError):
        codec.decode(Payload(CodecId.RING_U32, b"\0" * 3, good.body))


def test_wrong_codec_size_and_cohort_overflow_are_aggregation_errors() -> None:
    codec, agg = components(cohort=2)
    state, _ = fill(codec, agg, [np.zeros(SIZE, np.float32)] * 2, [1.0, 1.0])
    extra = codec.encode(np.zeros(SIZE, np.float32), ctx(0, 2))
    with pytest.raises(AggregationError, match="expected_cohort"):
        agg.accumulate_payload(state, codec, extra, 1.0, client_id=2)
    with pytest.raises(AggregationError, match="RingCodec"):
        agg.accumulate_payload(state, DenseCodec(SIZE), extra, 1.0)
    with pytest.raises(AggregationError, match="size"):
        agg.init(SIZE + 1)
    with pytest.raises(AggregationError, match="center-only"):
        agg.merge(state, agg.init(SIZE))
    assert agg.mergeable is False
    with pytest.raises(AggregationError, match="no updates"):
        agg.finalize(agg.init(SIZE))


def test_ring_capacity_is_checked_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"cohort 1000 x max_weight 1 .*input_bits=24"):
        SecAggAggregator(RingCodec(RingSpec(input_bits=24), SIZE), SecAggOptions(1000))
    with pytest.raises(ConfigError, match="max_weight 20"):
        SecAggAggregator(
            RingCodec(RingSpec(input_bits=16), SIZE), SecAggOptions(4000, max_weight=20)
        )
    SecAggAggregator(RingCodec(RingSpec(input_bits=22), SIZE), SecAggOptions(1024))  # = 2^32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip": 0.0}, "clip"),
        ({"input_bits": 1}, "input_bits"),
        ({"input_bits": 33}, "input_bits"),
        ({"density": 0.0}, "density"),
        ({"modulus_bits": 40}, "modulus_bits"),
    ],
)
def test_ring_spec_validation_names_the_field(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        RingSpec(**kwargs)


def test_bad_options_and_sparse_without_support_fn() -> None:
    with pytest.raises(ConfigError, match="expected_cohort"):
        SecAggOptions(1)
    with pytest.raises(ConfigError, match="max_weight"):
        SecAggOptions(5, max_weight=0)
    with pytest.raises(ConfigError, match="support_fn"):
        RingCodec(RingSpec(density=0.5), SIZE)


# --- the codec -------------------------------------------------------------------

finite = st.floats(-5, 5, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, 16, elements=finite), st.booleans(), st.integers(4, 24))
def test_encode_decode_within_the_stated_bound(x, stochastic, bits) -> None:
    codec = RingCodec(RingSpec(clip=2.0, input_bits=bits, stochastic=stochastic), 16)
    got = codec.decode(codec.encode(x, ctx()))
    step = 2.0 / codec.spec.levels
    bound = step if stochastic else step / 2
    clipped = np.clip(x, -2.0, 2.0)
    np.testing.assert_array_less(np.abs(got - clipped), bound * (1 + 1e-6) + 1e-6)


def test_stochastic_rounding_is_unbiased() -> None:
    codec = RingCodec(RingSpec(clip=1.0, input_bits=4), 2000)  # step 1/7
    x = np.full(2000, 0.05, np.float32)
    got = codec.decode(codec.encode(x, ctx()))
    assert set(np.round(np.unique(got) * 7).tolist()) == {0.0, 1.0}
    assert abs(float(got.mean()) - 0.05) < 0.005  # std of the mean ~ 0.0015


def test_sparse_codec_sends_the_shared_support_only() -> None:
    codec = RingCodec(RingSpec(density=0.25), 400, randk_support)
    a = codec.encode(np.ones(400, np.float32), ctx(3, 1))
    b = codec.encode(np.ones(400, np.float32), ctx(3, 2))
    assert a.params == b.params  # same round, same cohort-shared support
    assert len(a.body) == 4 * 100
    dense = codec.decode(a)
    assert np.count_nonzero(dense) == 100
    np.testing.assert_allclose(dense[dense != 0], 4.0, rtol=1e-4)  # scaled by size / k
    assert codec.nbytes() == a.nbytes


def test_encode_rejects_nan_and_wrong_shape() -> None:
    codec = RingCodec(RingSpec(), SIZE)
    with pytest.raises(InvalidUpdateError, match="NaN"):
        codec.encode(np.array([0, np.nan, 0, 0], np.float32), ctx())
    with pytest.raises(InvalidUpdateError, match="shape"):
        codec.encode(np.zeros(SIZE + 1, np.float32), ctx())


@settings(max_examples=8, deadline=None)
@given(st.integers(4, 6), st.integers(0, 2**32 - 1))
def test_protocol_sum_equals_the_plaintext_ring_sum_for_any_dropouts(accepted, seed) -> None:
    rng = np.random.default_rng(seed)
    vectors = [rng.uniform(-1, 1, SIZE).astype(np.float32) for _ in range(accepted)]
    weights = [float(w) for w in rng.integers(1, 7, accepted)]
    results = []
    for secure in (True, False):
        codec, agg = components(secure=secure, cohort=6)
        state, _ = fill(codec, agg, vectors, weights, round_idx=int(seed % 5))
        results.append(agg.finalize(state))
    assert results[0].tobytes() == results[1].tobytes()
