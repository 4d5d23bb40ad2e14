"""Network model: tier links, latency matrices and the geographic model."""

import numpy as np
import pytest

from fedstrata.coordinator.planner import Link, TierLinks
from fedstrata.coordinator.topology import Tier
from fedstrata.errors import ConfigError, DataError
from fedstrata.sim.network import GeoModel, LatencyMatrix, NetworkModel


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
