"""The one device- and network-timing model (``fedstrata.core.timing``)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.core.timing import (
    compute_s,
    equal_share_bps,
    fair_share_finish,
    makespan_bound,
    precision_speedup,
    transfer_s,
    water_fill,
)
from fedstrata.errors import ConfigError

caps_st = st.lists(st.floats(1.0, 1e3), min_size=1, max_size=12)


@given(caps_st, st.floats(1.0, 5e3))
def test_water_fill_is_max_min_fair(caps, capacity):
    caps = np.array(caps)
    rates = water_fill(caps, capacity)
    assert (rates <= caps * (1 + 1e-12)).all()
    assert rates.sum() <= capacity * (1 + 1e-9)
    if caps.sum() > capacity:  # saturated: every uncapped flow gets the same, largest rate
        assert rates.sum() == pytest.approx(capacity)
        free = rates < caps * (1 - 1e-9)
        assert np.allclose(rates[free], rates.max())


def test_simultaneous_equal_flows_share_the_ingress():
    n = 10
    done = fair_share_finish(np.zeros(n), np.full(n, 8e6), np.full(n, 1e9), 1e7)
    np.testing.assert_allclose(done, 8.0)  # 80 Mb through 10 Mb/s


def test_capped_sender_and_staggered_start_by_hand():
    # A (cap 2) starts at 0 with 4 bits; B (cap 10) starts at 1 with 4 bits; capacity 4.
    # [0,1): A alone at 2 -> 2 bits left. From 1: A at 2 (capped), B at 2 -> A done at 2;
    # B has 2 left at t=2, then runs at 4 -> done at 2.5.
    done = fair_share_finish(
        np.array([0.0, 1.0]), np.array([4.0, 4.0]), np.array([2.0, 10.0]), 4.0
    )
    np.testing.assert_allclose(done, [2.0, 2.5])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 10), st.floats(1, 100)), min_size=1, max_size=15),
    st.floats(1, 50),
)
def test_makespan_bound_is_exact_when_caps_do_not_bind(flows, capacity):
    start = np.array([f[0] for f in flows])
    bits = np.array([f[1] for f in flows])
    caps = np.full(start.size, 1e12)
    done = fair_share_finish(start, bits, caps, capacity)
    assert (done >= start + bits / capacity - 1e-9).all()
    assert done.max() == pytest.approx(makespan_bound(start, bits, caps, capacity), rel=1e-9)


def test_fair_share_rejects_bad_input():
    with pytest.raises(ConfigError, match="caps_bps"):
        fair_share_finish(np.zeros(2), np.ones(2), np.array([1.0, 0.0]), 1.0)
    with pytest.raises(ConfigError, match="1-D"):
        fair_share_finish(np.zeros(2), np.ones(3), np.ones(2), 1.0)


def test_transfer_is_latency_plus_bits_over_bandwidth():
    # 1 MB at 8 Mb/s is one second, after 40 ms of latency; arrays broadcast
    assert float(transfer_s(0.04, 1_000_000, 8e6)) == pytest.approx(1.04)
    out = transfer_s(np.array([0.0, 0.5]), np.array([1_000, 2_000]), np.array([8e3, 16e3]))
    np.testing.assert_allclose(out, [1.0, 1.5])
    assert float(transfer_s(0.25, 0, 1.0)) == 0.25  # an empty message costs its latency


def test_compute_is_examples_times_flops_per_example_over_flops():
    assert float(compute_s(100, 2e6, 1e8)) == pytest.approx(2.0)
    np.testing.assert_allclose(compute_s(np.array([1, 4]), 1e3, np.array([1e3, 2e3])), [1, 2])
    assert float(compute_s(0, 1e9, 1e6)) == 0.0


def test_compute_divides_by_the_precision_speed_factor():
    assert float(compute_s(100, 2e6, 1e8, 2.0)) == pytest.approx(1.0)
    assert float(compute_s(100, 2e6, 1e8, 0.5)) == pytest.approx(4.0)  # slower: fp16 on a CPU
    bf16, fp16 = np.array([2.0, 1.5]), np.array([0.3, 4.0])
    np.testing.assert_array_equal(precision_speedup("fp32", bf16, fp16), [1.0, 1.0])
    assert precision_speedup("bf16", bf16, fp16) is bf16
    assert precision_speedup("fp16", bf16, fp16) is fp16
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16"):
        precision_speedup("auto", bf16, fp16)


@given(st.integers(1, 64), st.floats(1.0, 1e10))
def test_equal_share_of_simultaneous_equal_flows_is_the_fair_share(m, capacity):
    """Equal flows that start together, capped above the equal share, all finish when
    the closed form says (the planner's broadcast equals the simulator's)."""
    bits = np.full(m, 8e3)
    done = fair_share_finish(np.zeros(m), bits, np.full(m, capacity), capacity)
    share = equal_share_bps(capacity, m)
    np.testing.assert_allclose(done, float(transfer_s(0.0, 1e3, share)), rtol=1e-12)
    assert equal_share_bps(capacity, 0) == capacity


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 10), st.floats(1, 100), st.floats(0.1, 100)),
        min_size=1,
        max_size=15,
    ),
    st.floats(1, 50),
)
def test_makespan_bound_never_exceeds_the_fair_share_finish(flows, capacity):
    start, bits, caps = (np.array([f[i] for f in flows]) for i in range(3))
    done = fair_share_finish(start, bits, caps, capacity)
    assert done.max() >= makespan_bound(start, bits, caps, capacity) * (1 - 1e-9)
