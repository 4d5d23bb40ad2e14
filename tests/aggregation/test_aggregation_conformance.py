"""One conformance suite every aggregator passes, plus the package's public API surface."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedstrata import aggregation
from fedstrata.aggregation import (
    Aggregator,
    AggregatorSpec,
    CoordinateMedian,
    Krum,
    MeanState,
    TrimmedMean,
    VectorListState,
    WeightedMean,
    make_aggregator,
)
from fedstrata.core import ClientContext, CodecId, Payload, RoundContext
from fedstrata.errors import (
    AggregationError,
    ConfigError,
    InvalidUpdateError,
    PayloadError,
    ShapeError,
)
from fedstrata.pipeline import DenseCodec

ALL: list[Aggregator[Any]] = [
    WeightedMean(),
    CoordinateMedian(),
    TrimmedMean(beta=0.2),
    Krum(num_byzantine=1),
    Krum(num_byzantine=0, multi_m=2),
]
IDS = ["mean", "median", "trimmed", "krum", "multikrum"]
CTX = ClientContext(RoundContext(round_idx=0, root_seed=0), client_id=0)

# Static conformance: mypy checks these assignments against the Protocol.
_MEAN: Aggregator[MeanState] = WeightedMean()
_MEDIAN: Aggregator[VectorListState] = CoordinateMedian()
_TRIMMED: Aggregator[VectorListState] = TrimmedMean()
_KRUM: Aggregator[VectorListState] = Krum()


def filled(agg: Aggregator[Any], vecs: np.ndarray, weights: list[float] | None = None) -> Any:
    state = agg.init(vecs.shape[1])
    for i, vec in enumerate(vecs):
        agg.accumulate(state, vec, 1.0 if weights is None else weights[i], client_id=i)
    return state


def snapshot(state: Any) -> dict[str, Any]:
    if isinstance(state, MeanState):
        return {k: v.copy() for k, v in state.to_arrays().items()}
    return {"n": len(state.vectors), "ids": list(state.client_ids), "m": dict(state.metrics.sums)}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(params=ALL, ids=IDS)
def agg(request: pytest.FixtureRequest) -> Aggregator[Any]:
    result: Aggregator[Any] = request.param
    return result


def test_identical_updates_aggregate_to_that_update(agg: Aggregator[Any]) -> None:
    vec = np.array([1.5, -2.0, 0.0, 3.25], np.float32)
    out = agg.finalize(filled(agg, np.stack([vec] * 5), [1.0, 2.0, 3.0, 4.0, 5.0]))
    assert out.dtype == np.float32
    assert out.shape == (4,)
    np.testing.assert_allclose(out, vec, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays(np.float32, (5, 6), elements=st.floats(-100, 100, width=32)),
    st.lists(st.floats(0.01, 100), min_size=5, max_size=5),
    st.floats(1e-3, 1e3),
)
def test_weights_are_scale_invariant(vecs: np.ndarray, weights: list[float], c: float) -> None:
    for agg in ALL:
        base = agg.finalize(filled(agg, vecs, weights))
        scaled = agg.finalize(filled(agg, vecs, [w * c for w in weights]))
        np.testing.assert_allclose(scaled, base, rtol=1e-6, atol=1e-4)


def test_finalize_of_empty_state_raises(agg: Aggregator[Any]) -> None:
    with pytest.raises(AggregationError):
        agg.finalize(agg.init(3))


@pytest.mark.parametrize(
    "vector",
    [
        np.zeros(4, np.float32),
        np.zeros((3, 1), np.float32),
        np.zeros(3, np.float64),
        [0.0, 0.0, 0.0],
    ],
    ids=["too-long", "2-d", "float64", "list"],
)
def test_malformed_vectors_raise_shape_error_and_leave_state(
    agg: Aggregator[Any], vector: Any
) -> None:
    state = filled(agg, np.ones((1, 3), np.float32))
    before = snapshot(state)
    with pytest.raises(ShapeError, match="client 7"):
        agg.accumulate(state, vector, 1.0, client_id=7)
    assert same(before, snapshot(state))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vector_raises_invalid_update(agg: Aggregator[Any], bad: float) -> None:
    state = agg.init(3)
    with pytest.raises(InvalidUpdateError) as info:
        agg.accumulate(state, np.array([0.0, bad, 1.0], np.float32), 1.0, client_id=42)
    assert info.value.client_id == 42
    assert same(snapshot(agg.init(3)), snapshot(state))
    with pytest.raises(InvalidUpdateError) as unknown:
        agg.accumulate(state, np.array([bad, 0.0, 0.0], np.float32), 1.0)
    assert unknown.value.client_id == -1


@pytest.mark.parametrize("weight", [-1.0, np.nan, np.inf])
def test_bad_weight_raises_invalid_update(agg: Aggregator[Any], weight: float) -> None:
    state = agg.init(2)
    with pytest.raises(InvalidUpdateError, match="weight"):
        agg.accumulate(state, np.zeros(2, np.float32), weight, client_id=3)
    assert same(snapshot(agg.init(2)), snapshot(state))


def test_non_finite_metric_raises_invalid_update(agg: Aggregator[Any]) -> None:
    state = agg.init(2)
    with pytest.raises(InvalidUpdateError, match="'loss'"):
        agg.accumulate(state, np.zeros(2, np.float32), 1.0, metrics={"loss": float("nan")})
    assert same(snapshot(agg.init(2)), snapshot(state))


def test_bad_payload_leaves_state_unchanged(agg: Aggregator[Any]) -> None:
    state = filled(agg, np.ones((4, 3), np.float32))
    before = snapshot(state)
    bad = Payload(CodecId.DENSE_F32, b"", b"\x00" * 8)
    with pytest.raises(PayloadError):
        agg.accumulate_payload(state, DenseCodec(3), bad, 1.0, client_id=1)
    assert same(before, snapshot(state))
    good = DenseCodec(3).encode(np.ones(3, np.float32), CTX)
    agg.accumulate_payload(state, DenseCodec(3), good, 1.0, client_id=2)
    np.testing.assert_array_equal(agg.finalize(state), np.ones(3, np.float32))


def test_accumulate_does_not_keep_a_reference_to_the_vector(agg: Aggregator[Any]) -> None:
    buffer = np.ones(3, np.float32)
    state = agg.init(3)
    for i in range(5):
        agg.accumulate(state, buffer, 1.0, client_id=i)
    buffer[:] = 1e6  # a trainer reusing its output buffer for the next client
    np.testing.assert_array_equal(agg.finalize(state), np.ones(3, np.float32))


def test_only_the_mean_is_mergeable(agg: Aggregator[Any]) -> None:
    a, b = filled(agg, np.ones((3, 2), np.float32)), filled(agg, np.ones((3, 2), np.float32))
    if agg.mergeable:
        np.testing.assert_array_equal(agg.finalize(agg.merge(a, b)), np.ones(2, np.float32))
    else:
        with pytest.raises(AggregationError, match="cannot run at inner tiers"):
            agg.merge(a, b)


def test_metrics_are_weighted_means(agg: Aggregator[Any]) -> None:
    state = agg.init(1)
    for i, (w, loss) in enumerate([(1.0, 2.0), (3.0, 6.0), (0.0, 100.0)]):
        agg.accumulate(state, np.zeros(1, np.float32), w, client_id=i, metrics={"loss": loss})
    assert agg.finalize_metrics(state) == {"loss": 5.0}


# ---------------------------------------------------------------- registry and API


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (AggregatorSpec(), WeightedMean()),
        (AggregatorSpec(name="median"), CoordinateMedian()),
        (AggregatorSpec(name="trimmed_mean", trim_fraction=0.25), TrimmedMean(beta=0.25)),
        (AggregatorSpec(name="krum", krum_byzantine=2, krum_m=3), Krum(2, 3)),
    ],
)
def test_make_aggregator(spec: AggregatorSpec, expected: object) -> None:
    assert make_aggregator(spec) == expected


def test_aggregator_spec_validation() -> None:
    with pytest.raises(ConfigError, match=r"AggregatorSpec\.name"):
        AggregatorSpec(name="average")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"TrimmedMean.beta must be in \[0, 0.5\), got 0.5"):
        make_aggregator(AggregatorSpec(name="trimmed_mean", trim_fraction=0.5))


def test_public_api_surface() -> None:
    assert len(set(aggregation.__all__)) == len(aggregation.__all__)
    for name in aggregation.__all__:
        assert getattr(aggregation, name) is not None
    assert {"Aggregator", "WeightedMean", "MeanState", "CoordinateMedian", "TrimmedMean"} <= set(
        aggregation.__all__
    )
    assert "Krum" in aggregation.__all__
