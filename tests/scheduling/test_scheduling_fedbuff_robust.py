"""Issue 12 part 4: FedBuff's buffer under a robust aggregator (median, trimmed mean, Krum)."""

from __future__ import annotations

import numpy as np
import pytest

from fedstrata.aggregation import CoordinateMedian, Krum, TrimmedMean, WeightedMean
from fedstrata.errors import ConfigError
from fedstrata.scheduling import Accepted, Applied, FedBuffConfig, FedBuffServer

DIM, K = 8, 5
POISON = 1e6


def honest(i: int) -> np.ndarray:
    return (0.1 + 0.01 * np.random.default_rng(i).standard_normal(DIM)).astype(np.float32)


def step_with_a_poisoned_client(aggregator) -> Applied:
    server = FedBuffServer(DIM, FedBuffConfig(buffer_size=K), aggregator=aggregator)
    for i in range(K - 1):
        assert isinstance(server.receive(i, honest(i), 0), Accepted)
    decision = server.receive(99, np.full(DIM, POISON, np.float32), 0)
    assert isinstance(decision, Applied)
    return decision


@pytest.mark.parametrize(
    "rule", [CoordinateMedian(), TrimmedMean(0.2), Krum(1)], ids=["median", "trimmed", "krum"]
)
def test_a_poisoned_update_is_suppressed_by_a_robust_rule_but_not_by_the_mean(rule) -> None:
    robust = step_with_a_poisoned_client(rule)
    assert np.abs(robust.step).max() < 0.2
    mean = step_with_a_poisoned_client(None)
    assert np.abs(mean.step).max() > POISON / K / 2
    assert np.abs(step_with_a_poisoned_client(WeightedMean()).step).max() > POISON / K / 2


def test_the_robust_rule_sees_staleness_scaled_updates_and_the_buffer_empties() -> None:
    server = FedBuffServer(DIM, FedBuffConfig(buffer_size=3, server_lr=0.5), version=2,
                           aggregator=CoordinateMedian())  # fmt: skip
    ones = np.ones(DIM, np.float32)
    server.receive(0, ones, 2)  # tau 0
    server.receive(1, ones, 1)  # tau 1: 1/sqrt(2)
    applied = server.receive(2, ones, 0)  # tau 2: 1/sqrt(3)
    assert isinstance(applied, Applied)
    np.testing.assert_allclose(applied.mean_delta, 2**-0.5, rtol=1e-6)
    np.testing.assert_allclose(applied.step, 0.5 * 2**-0.5, rtol=1e-6)
    assert server.version == 3
    for i in range(2):  # the next step starts from an empty buffer
        server.receive(i, 3 * ones, 3)
    applied = server.receive(2, 3 * ones, 3)
    np.testing.assert_allclose(applied.mean_delta, 3.0)


def test_an_aggregators_buffer_is_not_checkpointed_as_a_running_sum() -> None:
    with pytest.raises(ConfigError, match="not checkpointed"):
        _ = FedBuffServer(DIM, aggregator=CoordinateMedian()).state
