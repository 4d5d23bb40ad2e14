"""FedBuff: staleness weighting, K-arrival steps, version bookkeeping, rejection."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import ConfigError, InvalidUpdateError, ProtocolError
from fedstrata.scheduling import (
    Accepted,
    Applied,
    FedBuffConfig,
    FedBuffServer,
    Rejected,
    StalenessKind,
    staleness_weight,
)

DIM = 16


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def test_staleness_weight_is_inverse_sqrt() -> None:
    np.testing.assert_allclose(staleness_weight(np.array([0, 1, 3, 8])), [1, 2**-0.5, 0.5, 1 / 3])
    np.testing.assert_allclose(staleness_weight(3, exponent=1.0), 0.25)
    np.testing.assert_allclose(staleness_weight(7, kind=StalenessKind.CONSTANT), 1.0)
    with pytest.raises(ConfigError, match="staleness"):
        staleness_weight(-1)


def test_applies_every_k_arrivals_and_bumps_the_version() -> None:
    server = FedBuffServer(DIM, FedBuffConfig(buffer_size=3, server_lr=0.5))
    d1 = server.receive(1, vec(1), 0)
    d2 = server.receive(2, vec(2), 0)
    assert isinstance(d1, Accepted)
    assert d1.buffered == 1
    assert isinstance(d2, Accepted)
    assert server.version == 0
    d3 = server.receive(3, vec(3), 0)
    assert isinstance(d3, Applied)
    assert d3.new_version == 1
    assert server.version == 1
    mean = (vec(1) + vec(2) + vec(3)) / 3
    np.testing.assert_allclose(d3.mean_delta, mean, rtol=1e-5)
    np.testing.assert_allclose(d3.step, 0.5 * mean, rtol=1e-5)
    assert d3.step.dtype == np.float32
    assert d3.mean_staleness == 0.0
    assert server.state.count == 0
    assert not server.state.buffer.any()


def test_stale_updates_are_down_weighted() -> None:
    server = FedBuffServer(DIM, FedBuffConfig(buffer_size=1), version=0)
    server.receive(0, vec(0), 0)  # version 1
    server.receive(0, vec(0), 1)  # version 2
    server.receive(0, vec(0), 2)  # version 3
    cfg2 = FedBuffServer(DIM, FedBuffConfig(buffer_size=2), version=3)
    cfg2.receive(7, vec(7), 3)  # tau 0
    applied = cfg2.receive(8, vec(8), 0)  # tau 3 -> weight 1/2
    assert isinstance(applied, Applied)
    assert applied.staleness == 3
    np.testing.assert_allclose(applied.mean_delta, (vec(7) + 0.5 * vec(8)) / 2, rtol=1e-5)
    assert applied.mean_staleness == 1.5
    assert applied.new_version == 4


def test_too_stale_updates_are_rejected_and_leave_the_buffer_alone() -> None:
    server = FedBuffServer(DIM, FedBuffConfig(buffer_size=2, max_staleness=2), version=5)
    rejected = server.receive(1, vec(1), 2)
    assert isinstance(rejected, Rejected)
    assert rejected.staleness == 3
    assert "max_staleness" in rejected.reason
    assert server.state.count == 0
    assert isinstance(server.receive(1, vec(1), 3), Accepted)


def test_protocol_and_update_errors() -> None:
    server = FedBuffServer(DIM, version=2)
    with pytest.raises(ProtocolError, match="version 3"):
        server.receive(1, vec(1), 3)
    with pytest.raises(InvalidUpdateError, match="shape"):
        server.receive(1, np.zeros(3, np.float32), 2)
    bad = vec(1)
    bad[0] = np.nan
    with pytest.raises(InvalidUpdateError, match="update has 1 NaN/Inf entries"):
        server.receive(1, bad, 2)  # the words of every driver's refusal (core.update)
    with pytest.raises(InvalidUpdateError, match="weight"):
        server.receive(1, vec(1), 2, weight=0.0)
    with pytest.raises(ConfigError, match="buffer_size"):
        FedBuffConfig(buffer_size=0)


def test_state_round_trips_mid_buffer() -> None:
    a = FedBuffServer(DIM, FedBuffConfig(buffer_size=3))
    a.receive(1, vec(1), 0)
    b = FedBuffServer(DIM, FedBuffConfig(buffer_size=3))
    b.load_state(a.state)
    for server in (a, b):
        server.receive(2, vec(2), 0)
    ra, rb = a.receive(3, vec(3), 0), b.receive(3, vec(3), 0)
    assert isinstance(ra, Applied)
    assert isinstance(rb, Applied)
    np.testing.assert_array_equal(ra.step, rb.step)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.floats(0.1, 10.0), st.integers(0, 999)),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 5),
    st.floats(0.1, 2.0),
)
def test_matches_the_reference_formula(
    arrivals: list[tuple[int, float, int]], k: int, lr: float
) -> None:
    server = FedBuffServer(DIM, FedBuffConfig(buffer_size=k, server_lr=lr, max_staleness=3))
    pending: list[tuple[float, float, np.ndarray]] = []
    for lag, weight, seed in arrivals:
        base = max(server.version - lag, 0)
        decision = server.receive(seed, vec(seed), base, weight)
        tau = server.version - base if not isinstance(decision, Applied) else decision.staleness
        if isinstance(decision, Rejected):
            assert tau > 3
            continue
        pending.append(((1 + tau) ** -0.5, weight, vec(seed)))
        if isinstance(decision, Applied):
            ref = sum(s * w * d for s, w, d in pending) / sum(w for _, w, _ in pending)
            np.testing.assert_allclose(decision.step, lr * ref, rtol=1e-4, atol=1e-5)
            assert len(pending) == k
            pending = []


def test_the_rules_judge_an_update_by_its_staleness() -> None:
    rules = FedBuffConfig(max_staleness=2, staleness_exponent=1.0)
    assert rules.staleness(1, 5, 3) == 2
    assert rules.rejection(2) is None
    assert rules.rejection(3) == "staleness 3 > max_staleness 2"
    assert rules.scale(3) == 0.25
    with pytest.raises(ProtocolError, match="client 1 trained on version 6, server is at 5"):
        rules.staleness(1, 5, 6)


def test_judge_gives_the_staleness_and_logs_a_rejection(caplog: pytest.LogCaptureFixture) -> None:
    rules = FedBuffConfig(max_staleness=2)
    with caplog.at_level(logging.WARNING, logger="fedstrata.scheduling.fedbuff"):
        assert rules.judge(4, 5, 3) == (2, None)
        assert not caplog.records
        assert rules.judge(4, 5, 2) == (3, "staleness 3 > max_staleness 2")
    assert [r.getMessage() for r in caplog.records] == [
        "client 4: update 3 versions stale (max 2), rejected"
    ]


def test_fold_and_flush_execute_a_coordinators_accept_and_step() -> None:
    server = FedBuffServer(DIM, FedBuffConfig(buffer_size=5, server_lr=0.5))
    with pytest.raises(ProtocolError, match="empty buffer"):
        server.flush(1, 0)
    assert server.fold(1, vec(1), 2.0, 0, 1.0) == 1
    assert server.fold(2, vec(2), 1.0, 3, 0.5) == 2
    with pytest.raises(InvalidUpdateError, match="weight"):
        server.fold(3, vec(3), -1.0, 0, 1.0)
    applied = server.flush(2, 3)  # a step before K when the coordinator says so
    expected = (2.0 * vec(1) + 0.5 * vec(2)) / 3.0
    np.testing.assert_allclose(applied.mean_delta, expected, rtol=1e-5)
    np.testing.assert_allclose(applied.step, 0.5 * expected, rtol=1e-5)
    assert (applied.new_version, applied.staleness, applied.mean_staleness) == (1, 3, 1.5)
    assert server.version == 1
    assert server.state.count == 0
