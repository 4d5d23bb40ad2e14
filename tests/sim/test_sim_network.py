"""Network model: fair-shared ingress, latency matrices and the geographic model."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.coordinator.planner import Link, TierLinks, makespan_bound
from fedstrata.coordinator.topology import Tier
from fedstrata.errors import ConfigError, DataError
from fedstrata.sim.network import (
    GeoModel,
    LatencyMatrix,
    NetworkModel,
    fair_share_finish,
    water_fill,
)

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


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_latency_matrix_round_trips(tmp_path, suffix):
    geo = GeoModel(2, 2, 3)
    matrix = geo.generate(np.random.default_rng(0)).matrix(geo)
    path = tmp_path / f"lat{suffix}"
    matrix.save(path)
    back = LatencyMatrix.load(path)
    assert back.ids == matrix.ids
    np.testing.assert_allclose(back.latency_ms, matrix.latency_ms, rtol=1e-5)
    assert back.index("center") == 12


def test_latency_matrix_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,a,b\na,0,x\nb,1,0\n")
    with pytest.raises(DataError, match="bad number"):
        LatencyMatrix.load(bad)
    bad.write_text("site,a\na,0\n")
    with pytest.raises(DataError, match="first row"):
        LatencyMatrix.load(bad)
    with pytest.raises(DataError, match="shape"):
        LatencyMatrix(("a", "b"), np.zeros((2, 3)))
    with pytest.raises(DataError, match=">= 0"):
        LatencyMatrix(("a",), np.array([[-1.0]]))
    with pytest.raises(DataError, match=r"\.csv or \.npz"):
        LatencyMatrix(("a",), np.zeros((1, 1))).save(tmp_path / "x.txt")
    with pytest.raises(DataError, match="no site"):
        LatencyMatrix(("a",), np.zeros((1, 1))).index("b")


def test_geo_model_latencies_reflect_the_planted_clusters():
    geo = GeoModel(3, 2, 4)
    layout = geo.generate(np.random.default_rng(1))
    lat = geo.latency_ms(layout.coords_km)
    assert lat.shape == (25, 25)
    assert np.allclose(lat, lat.T)
    assert (np.diag(lat) == 0).all()
    same_edge = layout.edge_of[:, None] == layout.edge_of[None, :]
    off = ~np.eye(24, dtype=bool)
    assert lat[:24, :24][same_edge & off].mean() < lat[:24, :24][~same_edge].mean() / 5
    with pytest.raises(ConfigError, match="num_regions"):
        GeoModel(num_regions=0)


def test_hop_latency_adds_the_matrix_to_the_link():
    links = TierLinks(Link(1e9, 0.001), Link(1e8, 0.005), Link(1e7, 0.02))
    matrix = LatencyMatrix(("0", "1", "center"), np.array([[0, 3, 40], [3, 0, 50], [40, 50, 0.0]]))
    net = NetworkModel(links, matrix, {"edge-0": 1, "center": 2})
    assert net.hop_latency_s(0, "edge-0", Tier.EDGE) == pytest.approx(0.004)
    assert net.hop_latency_s(0, "center", Tier.CENTER) == pytest.approx(0.06)
    assert net.hop_latency_s(0, "unknown", Tier.REGION) == pytest.approx(0.005)
    with pytest.raises(ConfigError, match="bandwidth_bps"):
        Link(0.0)
