"""Server optimizers: exactness, paper references, checkpoints, convergence, validation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedstrata.algorithms import (
    AdaptiveState,
    EmptyState,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    MomentumState,
    ServerOptimizer,
)
from fedstrata.errors import CheckpointCorrupt, ConfigError, ShapeError

# Static conformance: mypy checks these against the Protocol.
_A: ServerOptimizer[EmptyState] = FedAvg()
_B: ServerOptimizer[MomentumState] = FedAvgM()
_C: ServerOptimizer[AdaptiveState] = FedAdam()
_D: ServerOptimizer[AdaptiveState] = FedYogi()
_E: ServerOptimizer[AdaptiveState] = FedAdagrad()

ALL: list[ServerOptimizer[Any]] = [
    FedAvg(0.5),
    FedAvgM(0.5, 0.9),
    FedAdagrad(0.1),
    FedAdam(0.1),
    FedYogi(0.1),
]
IDS = ["fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi"]

BIG = float(np.float32(1e30))
pairs = st.integers(1, 16).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float32, n, elements=st.floats(-BIG, BIG, width=32)),
        hnp.arrays(np.float32, n, elements=st.floats(-BIG, BIG, width=32)),
    )
)


@settings(max_examples=80, deadline=None)
@given(pairs)
def test_fedavg_with_lr_one_is_exactly_params_plus_delta(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    params, delta = pair
    opt = FedAvg()
    new, _ = opt.step(params, delta, opt.init(params))
    assert new.dtype == np.float32
    assert np.array_equal(new, params + delta)


@settings(max_examples=40, deadline=None)
@given(pairs, st.floats(1e-3, 10.0))
def test_fedavg_scales_the_delta_in_float32(
    pair: tuple[np.ndarray, np.ndarray], lr: float
) -> None:
    params, delta = (np.asarray(p / np.float32(1e10), np.float32) for p in pair)
    opt = FedAvg(server_lr=lr)
    new, _ = opt.step(params, delta, opt.init(params))
    assert np.array_equal(new, params + np.float32(lr) * delta)


@settings(max_examples=40, deadline=None)
@given(pairs, st.floats(1e-2, 2.0))
def test_fedavgm_with_momentum_zero_equals_fedavg(
    pair: tuple[np.ndarray, np.ndarray], lr: float
) -> None:
    params, delta = (np.asarray(p / np.float32(1e10), np.float32) for p in pair)
    avg, avgm = FedAvg(lr), FedAvgM(lr, momentum=0.0)
    p1, s1 = params, avg.init(params)
    p2, s2 = params, avgm.init(params)
    for k in range(3):
        d = delta * np.float32(k + 1)
        p1, s1 = avg.step(p1, d, s1)
        p2, s2 = avgm.step(p2, d, s2)
        assert np.array_equal(p1, p2)


def deltas(seed: int, size: int = 6, steps: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=size) * 0.1).astype(np.float32) for _ in range(steps)]


def test_fedavgm_matches_hand_written_heavy_ball() -> None:
    params = np.linspace(-1, 1, 6).astype(np.float32)
    lr, beta = 0.7, 0.9
    opt = FedAvgM(lr, beta)
    x, state = params, opt.init(params)
    ref_x, ref_v = params.astype(np.float64), np.zeros(6)
    for d in deltas(0):
        x, state = opt.step(x, d, state)
        ref_v = beta * ref_v + d
        ref_x = ref_x + lr * ref_v
    np.testing.assert_allclose(x, ref_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.velocity, ref_v, rtol=1e-5, atol=1e-6)


def reference_reddi(kind: str, x0: list[float], ds: list[list[float]], lr: float) -> list[float]:
    """Reddi et al. 2021, Algorithm 2, written coordinate by coordinate in float64."""
    beta1, beta2, tau = 0.9, 0.99, 1e-3
    x = list(x0)
    m = [0.0] * len(x)
    v = [tau * tau] * len(x)
    for d in ds:
        for i, di in enumerate(d):
            m[i] = beta1 * m[i] + (1 - beta1) * di
            if kind == "adagrad":
                v[i] = v[i] + di * di
            elif kind == "adam":
                v[i] = beta2 * v[i] + (1 - beta2) * di * di
            else:  # yogi
                sign = (v[i] > di * di) - (v[i] < di * di)
                v[i] = v[i] - (1 - beta2) * di * di * sign
            x[i] = x[i] + lr * m[i] / (math.sqrt(v[i]) + tau)
    return x


@pytest.mark.parametrize(
    ("opt", "kind"),
    [(FedAdagrad(0.05), "adagrad"), (FedAdam(0.05), "adam"), (FedYogi(0.05), "yogi")],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adaptive_optimizers_match_the_paper_for_three_steps(
    opt: FedAdagrad | FedAdam | FedYogi, kind: str, seed: int
) -> None:
    params = np.random.default_rng(seed + 10).normal(size=6).astype(np.float32)
    ds = deltas(seed)
    x, state = params, opt.init(params)
    for d in ds:
        x, state = opt.step(x, d, state)
    expected = reference_reddi(kind, params.tolist(), [d.tolist() for d in ds], 0.05)
    assert x.dtype == np.float32
    assert state.m.dtype == state.v.dtype == np.float32
    assert state.step == 3
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-6)


def test_paper_defaults() -> None:
    for cls in (FedAdagrad, FedAdam, FedYogi):
        opt = cls()
        assert (opt.beta1, opt.beta2, opt.tau) == (0.9, 0.99, 1e-3)
        state = opt.init(np.zeros(3, np.float32))
        np.testing.assert_array_equal(state.v, np.full(3, np.float32(1e-3) ** 2))
        np.testing.assert_array_equal(state.m, np.zeros(3, np.float32))


@pytest.mark.parametrize("opt", ALL, ids=IDS)
def test_state_round_trips_through_arrays_and_resumes_exactly(
    opt: ServerOptimizer[Any], tmp_path: Path
) -> None:
    params = np.linspace(-1, 1, 6).astype(np.float32)
    ds = deltas(5, steps=4)
    x, state = params, opt.init(params)
    for d in ds[:3]:
        x, state = opt.step(x, d, state)
    np.savez(tmp_path / "opt.npz", **state.to_arrays())
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as data:
        restored = type(state).from_arrays(dict(data))
    for key, value in state.to_arrays().items():
        assert np.array_equal(restored.to_arrays()[key], value)
    x1, _ = opt.step(x, ds[3], state)
    x2, _ = opt.step(x, ds[3], restored)
    assert np.array_equal(x1, x2)


@pytest.mark.parametrize("opt", ALL, ids=IDS)
def test_step_does_not_mutate_its_inputs(opt: ServerOptimizer[Any]) -> None:
    params = np.ones(4, np.float32)
    delta = np.full(4, 0.5, np.float32)
    state = opt.init(params)
    _, state = opt.step(params, delta, state)
    before = {k: v.copy() for k, v in state.to_arrays().items()}
    params_copy, delta_copy = params.copy(), delta.copy()
    opt.step(params, delta, state)
    assert np.array_equal(params, params_copy)
    assert np.array_equal(delta, delta_copy)
    assert all(np.array_equal(v, state.to_arrays()[k]) for k, v in before.items())


def run_quadratic(opt: ServerOptimizer[Any], rounds: int) -> tuple[float, float]:
    """Five clients with different optima of f_k(x) = 0.5 sum a (x - c_k)^2, local GD."""
    rng = np.random.default_rng(0)
    curv = rng.uniform(0.5, 2.0, size=10)
    centers = rng.normal(size=(5, 10))
    optimum = centers.mean(axis=0)
    x = np.full(10, 3.0, np.float32)
    state = opt.init(x)
    start = float(np.linalg.norm(x - optimum))
    for _ in range(rounds):
        new = []
        for c in centers:
            local = x.astype(np.float64)
            for _ in range(5):
                local -= 0.1 * curv * (local - c)
            new.append(local - x)
        x, state = opt.step(x, np.mean(new, axis=0).astype(np.float32), state)
    return start, float(np.linalg.norm(x - optimum))


@pytest.mark.parametrize(
    "opt",
    [FedAvg(1.0), FedAvgM(0.5, 0.9), FedAdagrad(0.3), FedAdam(0.05), FedYogi(0.05)],
    ids=IDS,
)
def test_each_optimizer_converges_on_a_quadratic(opt: ServerOptimizer[Any]) -> None:
    start, end = run_quadratic(opt, rounds=300)
    assert end < 1e-2 * start


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FedAvg(server_lr=0.0), r"FedAvg\.server_lr must be finite and > 0, got 0\.0"),
        (lambda: FedAvg(server_lr=math.inf), r"FedAvg\.server_lr"),
        (lambda: FedAvgM(momentum=1.0), r"FedAvgM\.momentum must be in \[0, 1\), got 1\.0"),
        (lambda: FedAdam(beta1=-0.1), r"FedAdam\.beta1 must be in \[0, 1\), got -0\.1"),
        (lambda: FedYogi(beta2=1.5), r"FedYogi\.beta2 must be in \[0, 1\), got 1\.5"),
        (lambda: FedAdagrad(tau=0.0), r"FedAdagrad\.tau must be > 0, got 0\.0"),
        (lambda: FedAdam(server_lr=math.nan), r"FedAdam\.server_lr"),
    ],
)
def test_hyperparameters_are_validated(make: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize("opt", ALL, ids=IDS)
def test_shapes_are_validated(opt: ServerOptimizer[Any]) -> None:
    params = np.zeros(3, np.float32)
    state = opt.init(params)
    with pytest.raises(ShapeError, match="differ"):
        opt.step(params, np.zeros(4, np.float32), state)
    with pytest.raises(ShapeError, match="float32"):
        opt.step(params.astype(np.float64), np.zeros(3, np.float32), state)
    if not isinstance(state, EmptyState):
        bigger = np.zeros(5, np.float32)
        with pytest.raises(ShapeError, match="optimizer state"):
            opt.step(bigger, bigger, state)


@pytest.mark.parametrize(
    ("cls", "arrays", "match"),
    [
        (MomentumState, {}, "lacks array 'velocity'"),
        (MomentumState, {"velocity": np.zeros(3)}, "float32"),
        (AdaptiveState, {"m": np.zeros(2, np.float32), "v": np.zeros(3, np.float32)}, "differ"),
        (AdaptiveState, {"m": np.zeros(2, np.float32), "v": np.zeros(2, np.float32)}, "step"),
    ],
)
def test_malformed_state_arrays_raise_checkpoint_corrupt(
    cls: Any, arrays: dict[str, np.ndarray], match: str
) -> None:
    with pytest.raises(CheckpointCorrupt, match=match):
        cls.from_arrays(arrays)
