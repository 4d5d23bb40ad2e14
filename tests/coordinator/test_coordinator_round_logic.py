"""The round rules every driver takes from ``coordinator.round_logic`` (Issue 12).

The simulator folds a dense vector (its fast path) or a payload; the runtime always
folds a payload. These tests pin that both reach the same state, the same refusal in
the same words, and the same server step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.aggregation.mean import WeightedMean
from fedstrata.aggregation.robust import CoordinateMedian
from fedstrata.algorithms.server import FedAvg, FedAvgM
from fedstrata.coordinator import RoundOutcome
from fedstrata.coordinator.round_logic import (
    client_weight,
    decode_update,
    fold_update,
    server_step,
    start_hooks,
)
from fedstrata.core.context import RoundContext
from fedstrata.core.metrics import AnyStats
from fedstrata.core.params import FloatVector, ParamSpec
from fedstrata.core.payload import CodecId, Payload
from fedstrata.core.update import validate_vector
from fedstrata.errors import (
    FedstrataError,
    InvalidUpdateError,
    PrivacyBudgetExhausted,
    SecAggError,
)
from fedstrata.pipeline.dense import DenseCodec
from fedstrata.pipeline.stage import Pipeline

SIZE = 6


def make_update(seed: int, size: int = SIZE) -> FloatVector:
    return np.random.default_rng(seed).normal(size=size).astype(np.float32)


def dense_payload(vector: FloatVector) -> Payload:
    return Payload(CodecId.DENSE_F32, b"", vector.astype("<f4").tobytes())


def outcome(accepted: tuple[int, ...] = (1, 2), *, applied: bool = True) -> RoundOutcome:
    return RoundOutcome(3, 4, accepted, ((9, "gone"),), (), 1.0, applied)


@given(st.integers(0, 10**9))
def test_weight_rule_examples_or_one(examples: int) -> None:
    assert client_weight(examples, "examples") == float(examples)
    assert client_weight(examples, "uniform") == 1.0


@pytest.mark.parametrize("seeds", [(1,), (1, 2, 3), (4, 5)])
def test_vector_and_dense_payload_fold_to_the_same_state(seeds: tuple[int, ...]) -> None:
    agg = WeightedMean()
    by_vector, by_payload = agg.init(SIZE), agg.init(SIZE)
    codec = DenseCodec(SIZE)
    for cid, seed in enumerate(seeds):
        v, w, m = make_update(seed), float(cid + 2), {"train_loss": 0.5 + cid}
        by_vector, _ = fold_update(agg, by_vector, v, w, None, client_id=cid, metrics=m)
        by_payload, decode_s = fold_update(
            agg, by_payload, dense_payload(v), w, codec, client_id=cid, metrics=m
        )
        assert decode_s >= 0.0
    np.testing.assert_array_equal(agg.finalize(by_vector), agg.finalize(by_payload))
    assert agg.finalize_metrics(by_vector) == agg.finalize_metrics(by_payload)


@pytest.mark.parametrize(
    "bad",
    [
        np.array([1, np.nan, 0, np.inf, 0, 0], np.float32),
        np.zeros(SIZE - 2, np.float32),
        np.zeros(SIZE + 1, np.float32),
    ],
    ids=["nan-inf", "short", "long"],
)
@pytest.mark.parametrize("agg", [WeightedMean(), CoordinateMedian()], ids=["mean", "median"])
def test_a_bad_payload_is_refused_in_a_dense_vectors_words(bad, agg) -> None:
    """The simulator's reason for a bad dense vector is the runtime's for the payload."""
    with pytest.raises(InvalidUpdateError) as vector_refusal:
        validate_vector(7, bad, ParamSpec(names=("w",), shapes=((SIZE,),)))
    state = agg.init(SIZE)
    with pytest.raises(InvalidUpdateError) as payload_refusal:
        fold_update(agg, state, dense_payload(bad), 1.0, DenseCodec(SIZE), client_id=7, metrics={})
    assert str(payload_refusal.value) == str(vector_refusal.value)
    assert str(payload_refusal.value).startswith("client 7: update ")
    with pytest.raises(InvalidUpdateError) as decode_refusal:
        decode_update(dense_payload(bad), DenseCodec(SIZE), client_id=7)
    assert str(decode_refusal.value) == str(vector_refusal.value)


def test_a_refused_payload_leaves_the_sum_untouched() -> None:
    agg = WeightedMean()
    state, _ = fold_update(agg, agg.init(SIZE), make_update(1), 2.0, None, client_id=0, metrics={})
    before = state.weighted_sum.copy()
    with pytest.raises(InvalidUpdateError):
        fold_update(agg, state, Payload(CodecId.DENSE_F32, b"", b"\x00" * 3), 1.0,
                    DenseCodec(SIZE), client_id=1, metrics={})  # fmt: skip
    np.testing.assert_array_equal(state.weighted_sum, before)
    assert state.count == 1


def test_a_payload_without_a_codec_is_refused_naming_the_client() -> None:
    agg = WeightedMean()
    with pytest.raises(FedstrataError, match="client 4 sent a payload but the run has no"):
        fold_update(agg, agg.init(SIZE), dense_payload(make_update(1)), 1.0, None,
                    client_id=4, metrics={})  # fmt: skip
    with pytest.raises(FedstrataError, match="client 4 sent a payload"):
        decode_update(dense_payload(make_update(1)), None, client_id=4)


def test_decode_update_returns_a_dense_vector_unchanged() -> None:
    v = make_update(3)
    assert decode_update(v, None, client_id=0)[0] is v
    np.testing.assert_array_equal(
        decode_update(dense_payload(v), DenseCodec(SIZE), client_id=0)[0], v
    )


@dataclass
class Halve:
    """A stage whose server half halves the aggregate."""

    name: str = "halve"
    requires_before: frozenset[str] = frozenset()

    def encode(self, vector, ctx):
        return vector

    def decode(self, aggregate, ctx):
        return aggregate / np.float32(2)


@dataclass
class Publisher:
    published: list[tuple[FloatVector, RoundContext]] = field(default_factory=list)

    def publish(self, params: FloatVector, ctx: RoundContext) -> None:
        self.published.append((params, ctx))


@dataclass
class Hook:
    applies_every_round: bool = False
    seen: list[int] = field(default_factory=list)
    stop_at: int | None = None

    def start(self, round_idx: int) -> None:
        if round_idx == self.stop_at:
            raise PrivacyBudgetExhausted(f"budget spent before round {round_idx}")

    def aggregate(self, mean: FloatVector, accepted: int, ctx: RoundContext) -> FloatVector:
        self.seen.append(accepted)
        return mean + np.float32(1)

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> AnyStats | None:
        return None


def step(out: RoundOutcome, finalize, *, hooks=(), pipeline=None, optimizer=None, broadcast=None):
    params = make_update(0)
    opt = optimizer or FedAvg(server_lr=0.5)
    new, state = server_step(
        out, params, opt.init(params), finalize, hooks=hooks, pipeline=pipeline,
        optimizer=opt, broadcast=broadcast, root_seed=11,
    )  # fmt: skip
    return params, new, state


def test_server_step_runs_hooks_then_server_halves_then_the_optimizer() -> None:
    mean, hook, pub = make_update(5), Hook(), Publisher()
    pipeline = Pipeline([Halve()], DenseCodec(SIZE))
    params, new, _ = step(outcome(), lambda: mean, hooks=(hook,), pipeline=pipeline, broadcast=pub)
    expected, _ = FedAvg(server_lr=0.5).step(params, (mean + np.float32(1)) / np.float32(2), None)
    np.testing.assert_array_equal(new, expected)
    assert hook.seen == [2]
    ((published, ctx),) = pub.published
    assert published is new
    assert ctx == RoundContext(3, 11)


def test_server_step_without_a_publisher_and_with_state() -> None:
    mean = make_update(5)
    opt = FedAvgM(momentum=0.5)
    params, new, state = step(outcome(), lambda: mean, optimizer=opt)
    want, want_state = opt.step(params, mean, opt.init(params))
    np.testing.assert_array_equal(new, want)
    np.testing.assert_array_equal(state.velocity, want_state.velocity)


def test_a_round_below_min_clients_leaves_the_model_unless_a_hook_applies_every_round() -> None:
    def finalize() -> FloatVector:
        raise AssertionError("not finalized")

    params, new, _ = step(outcome(applied=False), finalize, hooks=(Hook(),))
    assert new is params
    every = Hook(applies_every_round=True)
    params, new, _ = step(outcome((), applied=False), finalize, hooks=(every,))
    np.testing.assert_array_equal(new, params + np.float32(0.5))  # a zero mean, noised
    assert every.seen == [0]


def test_a_lost_secure_sum_leaves_the_model_unchanged() -> None:
    def finalize() -> FloatVector:
        raise SecAggError("2 survivors below the threshold 3")

    params, new, _ = step(outcome(), finalize)
    assert new is params


def test_start_hooks_returns_why_the_run_stops() -> None:
    hooks = (Hook(), Hook(stop_at=2))
    assert start_hooks(hooks, 1) is None
    assert start_hooks(hooks, 2) == "budget spent before round 2"
