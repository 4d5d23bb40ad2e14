"""Training-time predictor: cold start, convergence, error reporting, history replay."""

from __future__ import annotations

import numpy as np
import pytest

from fedstrata.errors import ConfigError, DataError, RegistryError
from fedstrata.scheduling import (
    DeviceProfiles,
    HistoryBatch,
    PredictorConfig,
    TimePredictor,
    replay_history,
)

N = 200


def profiles(n: int = N) -> DeviceProfiles:
    rng = np.random.default_rng(0)
    return DeviceProfiles(
        np.arange(n) * 3 + 5,
        np.exp(rng.uniform(np.log(0.02), np.log(20), n)),
        4.0,
        20.0,
        10.0,
        50.0,
        1.0,
    )


def synthetic_rounds(
    p: DeviceProfiles, rounds: int, seed: int = 1
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Devices run 0.3x..3x slower than their profile says, with 5 % noise."""
    rng = np.random.default_rng(seed)
    true_spe = 1e6 / p.flops * np.exp(rng.uniform(np.log(0.3), np.log(3.0), len(p)))
    out = []
    for _ in range(rounds):
        ids = rng.choice(p.device_id, size=len(p) // 2, replace=False)
        idx = np.searchsorted(p.device_id, ids)
        work = rng.integers(10, 500, ids.size)
        actual = work * true_spe[idx] * rng.lognormal(0.0, 0.05, ids.size)
        out.append((ids, work, actual))
    return out


def test_cold_start_uses_the_profile_prior() -> None:
    p = profiles()
    pred = TimePredictor.from_profiles(p, flops_per_example=1e6)
    np.testing.assert_allclose(pred.predict(p.device_id, 100), 100 * 1e6 / (p.cpu_score * 1e9))
    with_overhead = TimePredictor.from_profiles(p, 1e6, PredictorConfig(overhead_s=2.0))
    np.testing.assert_allclose(with_overhead.predict(p.device_id[:3], 0), 2.0)
    assert np.isnan(pred.error.last_mape)
    assert pred.error.observations == 0


def test_predictor_converges_on_synthetic_history() -> None:
    p = profiles()
    pred = TimePredictor.from_profiles(p, flops_per_example=1e6)
    errors = [pred.observe(*batch).last_mape for batch in synthetic_rounds(p, 30)]
    assert errors[0] > 0.5  # the profile prior is off by up to 3x
    assert np.mean(errors[-5:]) < 0.08  # ~ the 5 % measurement noise
    assert pred.error.cumulative_mape < errors[0]
    assert pred.error.observations == 30 * (N // 2)


def test_ewma_tracks_a_device_that_slows_down() -> None:
    pred = TimePredictor([0], [1.0], PredictorConfig(ewma=0.5, prior_strength=1.0))
    for _ in range(20):
        pred.observe([0], 10, [10.0])
    for _ in range(10):
        pred.observe([0], 10, [40.0])
    assert pred.seconds_per_example([0])[0] == pytest.approx(4.0, rel=0.05)


def test_replay_history_equals_observing_round_by_round() -> None:
    p = profiles(40)
    rounds = synthetic_rounds(p, 5)
    direct = TimePredictor.from_profiles(p, 1e6)
    for batch in rounds:
        direct.observe(*batch)
    hist = HistoryBatch(
        np.concatenate([b[0] for b in rounds]),
        np.concatenate([np.full(b[0].size, r) for r, b in enumerate(rounds)]),
        np.concatenate([b[1] for b in rounds]),
        np.concatenate([b[1] for b in rounds]),
        np.nan,
        np.concatenate([b[2] for b in rounds]),
        0,
    )
    replayed = TimePredictor.from_profiles(p, 1e6)
    assert replay_history(replayed, hist) == direct.error
    np.testing.assert_allclose(replayed.predict(p.device_id, 50), direct.predict(p.device_id, 50))


def test_state_round_trips() -> None:
    p = profiles(20)
    pred = TimePredictor.from_profiles(p, 1e6)
    pred.observe(p.device_id[:5], 10, np.ones(5))
    other = TimePredictor.from_profiles(p, 1e6)
    other.load_state(pred.state)
    np.testing.assert_array_equal(other.predict(p.device_id, 7), pred.predict(p.device_id, 7))
    assert other.error == pred.error


def test_bad_input_raises() -> None:
    pred = TimePredictor([1, 2], [0.1, 0.2])
    with pytest.raises(RegistryError, match=r"\[3\]"):
        pred.predict([1, 3], 10)
    with pytest.raises(DataError, match="once per batch"):
        pred.observe([1, 1], 10, [1.0, 1.0])
    with pytest.raises(DataError, match="work"):
        pred.observe([1], 0, [1.0])
    with pytest.raises(DataError, match="finite"):
        pred.observe([1], 1, [np.nan])
    with pytest.raises(DataError, match="unique"):
        TimePredictor([1, 1], [0.1, 0.1])
    with pytest.raises(DataError, match="> 0"):
        TimePredictor([1], [0.0])
    with pytest.raises(ConfigError, match="ewma"):
        PredictorConfig(ewma=0.0)
