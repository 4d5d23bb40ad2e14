"""The availability soak's fault process on a simulated clock."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import ConfigError
from fedstrata.runtime.availability import HOUR_S, FaultRate, SoakSpec, compare, simulate

NEVER = FaultRate(1e15, 1.0)  # a node kind that does not fail


def test_a_lone_center_is_available_its_steady_state_fraction():
    center = FaultRate(24 * HOUR_S, 2 * HOUR_S)
    spec = SoakSpec(
        center=center, edge=NEVER, client=NEVER, standby_centers=0, spare_edges=0,
        edges=1, clients_per_edge=1, horizon_s=20 * 365 * 24 * HOUR_S,
    )  # fmt: skip
    report = simulate(spec, np.random.default_rng(0))
    assert report.availability == pytest.approx(center.steady_state, abs=0.01)  # 0.923
    assert report.quorum_lost_s == 0.0


def test_a_standby_turns_hours_of_outage_into_seconds_per_fault():
    spec = SoakSpec(horizon_s=60 * 24 * HOUR_S, center_failover_s=5.0, edge_failover_s=5.0)
    with_standby, alone = compare(spec, seed=1)
    assert alone.availability < 0.97
    assert with_standby.availability > 0.999
    # every center fault costs the failover time (or a little more if both are down)
    assert with_standby.center_down_s >= 5.0 * (with_standby.center_failovers - 1)


def test_with_instant_failover_and_replacement_only_quorum_loss_remains():
    spec = SoakSpec(
        edge=NEVER, client=NEVER, center_failover_s=1e-9, replace_s=1e-9,
        horizon_s=30 * 24 * HOUR_S,
    )  # fmt: skip
    report = simulate(spec, np.random.default_rng(2))
    assert report.availability == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    quorum=st.floats(0.1, 1.0),
    standby=st.integers(0, 2),
    spares=st.integers(0, 2),
)
def test_availability_is_a_fraction_and_outages_fit_the_horizon(seed, quorum, standby, spares):
    spec = SoakSpec(
        edges=3, clients_per_edge=3, quorum_fraction=quorum, standby_centers=standby,
        spare_edges=spares, horizon_s=5 * 24 * HOUR_S,
    )  # fmt: skip
    report = simulate(spec, np.random.default_rng(seed))
    assert 0.0 <= report.availability <= 1.0
    lost = report.center_down_s + report.quorum_lost_s
    assert report.availability >= 1.0 - lost / spec.horizon_s - 1e-9
    assert report.center_down_s <= spec.horizon_s


def test_bad_specs_are_refused():
    with pytest.raises(ConfigError):
        FaultRate(0, 1)
    with pytest.raises(ConfigError):
        SoakSpec(edges=0)
    with pytest.raises(ConfigError):
        SoakSpec(quorum_fraction=0)
