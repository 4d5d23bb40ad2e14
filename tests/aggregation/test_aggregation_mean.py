"""WeightedMean: merge laws, exactness, metrics, payload decoding, checkpoints, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedstrata.aggregation import MeanState, WeightedMean, accumulate_update
from fedstrata.core import ClientContext, CodecId, Payload, RoundContext, Update
from fedstrata.errors import AggregationError, ConfigError, PayloadError, ShapeError
from fedstrata.pipeline import DenseCodec

AGG = WeightedMean()
CTX = ClientContext(RoundContext(round_idx=0, root_seed=0), client_id=0)

Cohort = list[tuple[np.ndarray, float]]


@st.composite
def cohorts(draw: st.DrawFn, min_clients: int = 1, max_clients: int = 8) -> Cohort:
    """A list of (float32 vector, weight) of one random size."""
    size = draw(st.integers(1, 12))
    n = draw(st.integers(min_clients, max_clients))
    vec = hnp.arrays(np.float32, size, elements=st.floats(-1e4, 1e4, width=32))
    weight = st.floats(1e-3, 1e3)
    return [(draw(vec), draw(weight)) for _ in range(n)]


@st.composite
def dyadic_cohorts(draw: st.DrawFn) -> Cohort:
    """Integer vectors and integer weights: every float64 partial sum is exact."""
    size = draw(st.integers(1, 12))
    n = draw(st.integers(1, 8))
    vec = hnp.arrays(np.float32, size, elements=st.integers(-1000, 1000).map(float))
    return [(draw(vec), float(draw(st.integers(1, 100)))) for _ in range(n)]


def fold(cohort: Cohort, size: int | None = None) -> MeanState:
    state = AGG.init(size if size is not None else cohort[0][0].shape[0])
    for i, (vec, w) in enumerate(cohort):
        AGG.accumulate(state, vec, w, client_id=i)
    return state


def scale_of(cohort: Cohort) -> float:
    return max(float(np.abs(v).max()) for v, _ in cohort) + 1.0


def assert_close(a: np.ndarray, b: np.ndarray, cohort: Cohort) -> None:
    # float64 sums taken in another order differ by ~1e-16 relative to the largest
    # term; relative to the mean itself that can be large when terms cancel, so the
    # tolerance is relative to the scale of the inputs.
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * scale_of(cohort))


def split3(cohort: Cohort, i: int, j: int) -> tuple[Cohort, Cohort, Cohort]:
    i, j = sorted((i % (len(cohort) + 1), j % (len(cohort) + 1)))
    return cohort[:i], cohort[i:j], cohort[j:]


# ---------------------------------------------------------------- laws


@settings(max_examples=60, deadline=None)
@given(cohorts(), st.integers(0, 8), st.integers(0, 8))
def test_merge_is_associative(cohort: Cohort, i: int, j: int) -> None:
    size = cohort[0][0].shape[0]
    a, b, c = (fold(part, size) for part in split3(cohort, i, j))
    left = AGG.merge(AGG.merge(a.copy(), b), c)
    right = AGG.merge(a.copy(), AGG.merge(b.copy(), c))
    assert left.count == right.count == len(cohort)
    assert_close(AGG.finalize(left), AGG.finalize(right), cohort)


@settings(max_examples=60, deadline=None)
@given(cohorts(), st.integers(0, 8))
def test_merge_is_commutative_and_equals_serial(cohort: Cohort, i: int) -> None:
    size = cohort[0][0].shape[0]
    a, b = fold(cohort[:i], size), fold(cohort[i:], size)
    ab, ba = AGG.merge(a.copy(), b), AGG.merge(b.copy(), a)
    serial = AGG.finalize(fold(cohort))
    assert_close(AGG.finalize(ab), AGG.finalize(ba), cohort)
    assert_close(AGG.finalize(ab), serial, cohort)
    assert ab.total_weight == pytest.approx(sum(w for _, w in cohort), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(cohorts())
def test_left_fold_of_one_client_partials_is_bit_exact(cohort: Cohort) -> None:
    # Same order of float64 additions as serial accumulation: 0 + w*x is exact.
    size = cohort[0][0].shape[0]
    merged = AGG.init(size)
    for vec, w in cohort:
        merged = AGG.merge(merged, fold([(vec, w)], size))
    serial = fold(cohort)
    assert np.array_equal(merged.weighted_sum, serial.weighted_sum)
    assert merged.total_weight == serial.total_weight
    assert np.array_equal(AGG.finalize(merged), AGG.finalize(serial))


@settings(max_examples=30, deadline=None)
@given(cohorts(), st.integers(0, 8), st.integers(0, 8))
def test_same_tree_same_order_is_reproducible_bit_for_bit(cohort: Cohort, i: int, j: int) -> None:
    size = cohort[0][0].shape[0]

    def tree() -> np.ndarray:
        a, b, c = (fold(part, size) for part in split3(cohort, i, j))
        return AGG.finalize(AGG.merge(AGG.merge(a, b), c))

    assert np.array_equal(tree(), tree())


@settings(max_examples=40, deadline=None)
@given(dyadic_cohorts(), st.integers(0, 8), st.integers(0, 8))
def test_exact_inputs_merge_bit_exactly_in_any_tree(cohort: Cohort, i: int, j: int) -> None:
    size = cohort[0][0].shape[0]
    a, b, c = (fold(part, size) for part in split3(cohort, i, j))
    tree = AGG.merge(c.copy(), AGG.merge(b.copy(), a.copy()))
    serial = fold(cohort)
    assert np.array_equal(tree.weighted_sum, serial.weighted_sum)
    assert np.array_equal(AGG.finalize(tree), AGG.finalize(serial))


@settings(max_examples=40, deadline=None)
@given(cohorts(), st.sampled_from([0.25, 2.0, 1024.0]), st.floats(1e-3, 1e3))
def test_weights_are_scale_invariant(cohort: Cohort, power_of_two: float, c: float) -> None:
    base = AGG.finalize(fold(cohort))
    exact = AGG.finalize(fold([(v, w * power_of_two) for v, w in cohort]))
    assert np.array_equal(base, exact)  # scaling by 2^k is exact in binary floating point
    assert_close(AGG.finalize(fold([(v, w * c) for v, w in cohort])), base, cohort)


def test_matches_numpy_weighted_average() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(20, 50)).astype(np.float32)
    weights = rng.uniform(1, 30, size=20)
    result = AGG.finalize(fold(list(zip(vecs, weights.tolist(), strict=True))))
    expected = np.average(vecs.astype(np.float64), axis=0, weights=weights)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_state_memory_is_independent_of_cohort_size() -> None:
    state = AGG.init(1000)
    vec = np.ones(1000, np.float32)
    for i in range(200):
        AGG.accumulate(state, vec, 1.0, client_id=i)
    assert state.weighted_sum.nbytes == 8 * 1000
    assert state.count == 200


def test_finalize_does_not_change_state() -> None:
    state = fold([(np.arange(4, dtype=np.float32), 2.0)])
    before = state.to_arrays()
    assert np.array_equal(AGG.finalize(state), AGG.finalize(state))
    assert np.array_equal(state.to_arrays()["weighted_sum"], before["weighted_sum"])


# ---------------------------------------------------------------- metrics


def test_metrics_are_weighted_means_over_reporting_clients() -> None:
    state = AGG.init(2)
    vec = np.zeros(2, np.float32)
    AGG.accumulate(state, vec, 1.0, metrics={"loss": 1.0, "acc": 0.5})
    AGG.accumulate(state, vec, 3.0, metrics={"loss": 3.0})
    AGG.accumulate(state, vec, 0.0, metrics={"zero_only": 7.0})
    means = AGG.finalize_metrics(state)
    assert means == {"acc": 0.5, "loss": pytest.approx(2.5)}


def test_metrics_merge_like_the_sum() -> None:
    vec = np.zeros(1, np.float32)
    a, b, both = AGG.init(1), AGG.init(1), AGG.init(1)
    AGG.accumulate(a, vec, 2.0, metrics={"loss": 4.0})
    AGG.accumulate(b, vec, 6.0, metrics={"loss": 0.0, "steps": 5.0})
    AGG.accumulate(both, vec, 2.0, metrics={"loss": 4.0})
    AGG.accumulate(both, vec, 6.0, metrics={"loss": 0.0, "steps": 5.0})
    assert AGG.finalize_metrics(AGG.merge(a, b)) == AGG.finalize_metrics(both)
    assert AGG.finalize_metrics(both) == {"loss": 1.0, "steps": 5.0}


# ---------------------------------------------------------------- payloads


def dense_payload(vec: np.ndarray) -> Payload:
    return DenseCodec(vec.shape[0]).encode(vec, CTX)


def test_payload_accumulation_equals_dense_accumulation_bitwise() -> None:
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(5, 33)).astype(np.float32)
    codec, by_payload, by_vector = DenseCodec(33), AGG.init(33), AGG.init(33)
    for i, vec in enumerate(vecs):
        AGG.accumulate_payload(by_payload, codec, dense_payload(vec), 1.5 + i, client_id=i)
        AGG.accumulate(by_vector, vec, 1.5 + i, client_id=i)
    assert np.array_equal(by_payload.weighted_sum, by_vector.weighted_sum)
    assert by_payload.total_weight == by_vector.total_weight
    assert by_payload.count == 5


@pytest.mark.parametrize(
    "bad",
    [
        Payload(CodecId.DENSE_F32, b"", b"\x00" * 12),  # 3 floats instead of 4
        Payload(CodecId.DENSE_F32, b"", np.full(4, np.nan, "<f4").tobytes()),
        Payload(CodecId.RING_U32, b"", b"\x00" * 16),  # another codec's payload
    ],
    ids=["short-body", "nan-body", "wrong-codec"],
)
def test_bad_payload_raises_and_leaves_state_unchanged(bad: Payload) -> None:
    state = AGG.init(4)
    AGG.accumulate(state, np.arange(4, dtype=np.float32), 2.0, metrics={"loss": 1.0})
    before = {k: v.copy() for k, v in state.to_arrays().items()}
    with pytest.raises(PayloadError):
        AGG.accumulate_payload(state, DenseCodec(4), bad, 5.0, client_id=9, metrics={"x": 1.0})
    after = state.to_arrays()
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_codec_of_another_size_raises_shape_error_and_leaves_state_unchanged() -> None:
    state = AGG.init(4)
    payload = dense_payload(np.ones(6, np.float32))
    with pytest.raises(ShapeError, match="size 4"):
        AGG.accumulate_payload(state, DenseCodec(6), payload, 1.0)
    assert state.count == 0
    assert not state.weighted_sum.any()


def test_accumulate_update_dispatches_on_the_data() -> None:
    vec = np.array([1.0, 2.0], np.float32)
    dense = Update(client_id=1, round_idx=0, data=vec, num_examples=3, weight=3.0)
    encoded = Update(
        client_id=2, round_idx=0, data=dense_payload(vec * 3), num_examples=1, weight=1.0
    )
    state = accumulate_update(AGG, AGG.init(2), dense)
    state = accumulate_update(AGG, state, encoded, DenseCodec(2))
    np.testing.assert_array_equal(AGG.finalize(state), [1.5, 3.0])
    with pytest.raises(AggregationError, match="no codec"):
        accumulate_update(AGG, state, encoded)


# ---------------------------------------------------------------- checkpoints


@settings(max_examples=30, deadline=None)
@given(cohorts())
def test_state_round_trips_through_arrays_exactly(cohort: Cohort) -> None:
    state = fold(cohort)
    AGG.accumulate(state, cohort[0][0], 0.5, metrics={"loss": 0.1, "acc": 0.9})
    back = MeanState.from_arrays(state.to_arrays())
    assert np.array_equal(back.weighted_sum, state.weighted_sum)
    assert (back.total_weight, back.count) == (state.total_weight, state.count)
    assert back.metrics.sums == state.metrics.sums
    assert back.metrics.weights == state.metrics.weights


def test_state_round_trips_through_npz_file(tmp_path: Path) -> None:
    state = fold([(np.array([0.1, -3.0], np.float32), 1 / 3)])
    AGG.accumulate(state, np.array([1.0, 2.0], np.float32), 2.0, metrics={"loss": 0.25})
    np.savez(tmp_path / "partial.npz", **state.to_arrays())  # type: ignore[arg-type]
    with np.load(tmp_path / "partial.npz", allow_pickle=False) as data:
        back = MeanState.from_arrays(dict(data))
    assert np.array_equal(AGG.finalize(back), AGG.finalize(state))
    assert AGG.finalize_metrics(back) == AGG.finalize_metrics(state)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("weighted_sum", None, "lack keys"),
        ("weighted_sum", np.zeros(3, np.float32), "float64"),
        ("total_weight", np.array(-1.0), "finite and >= 0"),
        ("count", np.array([1, 2]), "scalars"),
        ("metric_sums", np.zeros(2), "one length"),
    ],
)
def test_malformed_arrays_raise_aggregation_error(
    key: str, value: np.ndarray | None, match: str
) -> None:
    arrays = fold([(np.ones(3, np.float32), 1.0)]).to_arrays()
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    with pytest.raises(AggregationError, match=match):
        MeanState.from_arrays(arrays)


# ---------------------------------------------------------------- errors


def test_finalize_of_empty_or_zero_weight_state_raises() -> None:
    with pytest.raises(AggregationError, match="total weight 0"):
        AGG.finalize(AGG.init(3))
    state = AGG.init(3)
    AGG.accumulate(state, np.ones(3, np.float32), 0.0)
    with pytest.raises(AggregationError, match="1 updates"):
        AGG.finalize(state)


def test_merge_rejects_different_sizes_and_self() -> None:
    with pytest.raises(AggregationError, match="sizes 3 and 4"):
        AGG.merge(AGG.init(3), AGG.init(4))
    state = AGG.init(3)
    with pytest.raises(AggregationError, match="itself"):
        AGG.merge(state, state)


def test_invalid_size_raises_shape_error() -> None:
    with pytest.raises(ShapeError, match=">= 0"):
        AGG.init(-1)


def test_float32_sum_dtype_halves_memory_within_float32_rounding():
    vecs = [np.random.default_rng(k).standard_normal(1000).astype(np.float32) for k in range(20)]
    ref, f32 = WeightedMean(), WeightedMean(sum_dtype="float32")
    a, b = ref.init(1000), f32.init(1000)
    assert b.weighted_sum.dtype == np.float32
    assert b.weighted_sum.nbytes * 2 == a.weighted_sum.nbytes
    for k, v in enumerate(vecs):
        ref.accumulate(a, v, k + 1.0)
        f32.accumulate(b, v, k + 1.0)
    # n=20 float32 roundings of the running sum: within ~n * 2**-24 of its magnitude
    np.testing.assert_allclose(f32.finalize(b), ref.finalize(a), rtol=0, atol=20 * 2**-24 * 20)
    restored = MeanState.from_arrays(b.to_arrays())  # travels as float64, exactly
    assert restored.weighted_sum.astype(np.float32).tobytes() == b.weighted_sum.tobytes()
    with pytest.raises(ConfigError, match="sum_dtype"):
        WeightedMean(sum_dtype="float16")
