"""Network model of the simulator: tier links, fair-shared ingress, latency matrices.

Each tier has a :class:`~fedstrata.coordinator.planner.Link` (LAN inside an edge,
metro edge -> region, WAN region -> center; see
:class:`~fedstrata.coordinator.planner.TierLinks`). Concurrent transfers into one
receiver share its ingress max-min fairly
(:func:`fedstrata.core.timing.fair_share_finish`, where all device and network
timing lives), so under flat FL a thin center link becomes the bottleneck in simulated
time. Hop latencies come from the link and, optionally, a latency matrix between sites
generated from a simple geographic model (points on a plane, latency = base + distance
/ propagation speed) and stored as CSV or ``.npz``.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedstrata.coordinator.planner import Link, TierLinks, distances_from_coords
from fedstrata.coordinator.topology import Tier
from fedstrata.errors import ConfigError, DataError

__all__ = [
    "GeoLayout",
    "GeoModel",
    "LatencyMatrix",
    "NetworkModel",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class LatencyMatrix:
    """One-way latencies in milliseconds between sites named by ``ids``.

    Raises:
        DataError: not square, ids not matching, or entries not finite and >= 0.
    """

    ids: tuple[str, ...]
    latency_ms: F64

    def __post_init__(self) -> None:
        m = np.asarray(self.latency_ms, dtype=np.float64)
        if m.ndim != 2 or m.shape != (len(self.ids), len(self.ids)):
            raise DataError(
                f"latency matrix has shape {m.shape}, want ({len(self.ids)}, {len(self.ids)})"
            )
        if not np.isfinite(m).all() or (m < 0).any():
            raise DataError("latency matrix entries must be finite and >= 0 ms")
        if len(set(self.ids)) != len(self.ids):
            raise DataError("latency matrix ids must be unique")
        object.__setattr__(self, "latency_ms", m)

    def index(self, site: str) -> int:
        """Row of ``site``.

        Raises:
            DataError: unknown site.
        """
        try:
            return self.ids.index(site)
        except ValueError:
            raise DataError(f"latency matrix has no site {site!r}") from None

    def save(self, path: Path) -> None:
        """Write ``.csv`` (header ``id,<ids>``, one row per site) or ``.npz``.

        Raises:
            DataError: another suffix.
        """
        if path.suffix == ".npz":
            np.savez(path, ids=np.array(self.ids, dtype=np.str_), latency_ms=self.latency_ms)
            return
        if path.suffix != ".csv":
            raise DataError(f"latency matrix file must end in .csv or .npz, got {path.name}")
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", *self.ids])
            for site, row in zip(self.ids, self.latency_ms, strict=True):
                writer.writerow([site, *(f"{v:.6g}" for v in row)])

    @classmethod
    def load(cls, path: Path) -> LatencyMatrix:
        """Read a file written by :meth:`save`.

        Raises:
            DataError: unreadable, malformed, or inconsistent file.
        """
        try:
            if path.suffix == ".npz":
                with np.load(path) as z:
                    return cls(tuple(str(i) for i in z["ids"]), z["latency_ms"])
            with path.open(newline="") as fh:
                rows = list(csv.reader(fh))
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"cannot read latency matrix {path}: {exc}") from exc
        return _from_rows(rows, path)


def _from_rows(rows: Sequence[Sequence[str]], path: Path) -> LatencyMatrix:
    if not rows or not rows[0] or rows[0][0] != "id":
        raise DataError(f"latency matrix {path}: first row must be 'id,<site ids>'")
    ids = tuple(rows[0][1:])
    if [r[0] for r in rows[1:]] != list(ids):
        raise DataError(f"latency matrix {path}: row ids must follow the header's order")
    try:
        values = np.array([[float(v) for v in r[1:]] for r in rows[1:]], dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"latency matrix {path}: bad number: {exc}") from None
    return LatencyMatrix(ids, values.reshape(len(ids), -1) if ids else values)


@dataclass(frozen=True)
class GeoModel:
    """Sites on a plane: regions far apart, edge sites inside them, devices around sites.

    Latency between two sites is ``base_latency_ms + route_factor * km / 200`` (light
    in fibre covers about 200 km per ms).

    Raises:
        ConfigError: non-positive counts or negative distances.
    """

    num_regions: int = 4
    edges_per_region: int = 5
    devices_per_edge: int = 20
    region_spread_km: float = 1500.0
    edge_spread_km: float = 150.0
    device_spread_km: float = 5.0
    base_latency_ms: float = 0.5
    route_factor: float = 2.0

    def __post_init__(self) -> None:
        for name in ("num_regions", "edges_per_region", "devices_per_edge"):
            if getattr(self, name) < 1:
                raise ConfigError(f"GeoModel.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("region_spread_km", "edge_spread_km", "device_spread_km", "base_latency_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"GeoModel.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def num_devices(self) -> int:
        return self.num_regions * self.edges_per_region * self.devices_per_edge

    def generate(self, rng: np.random.Generator) -> GeoLayout:
        """Device coordinates (rows ``0..n-1``), the center (row ``n``) and true clusters."""
        regions = rng.uniform(-self.region_spread_km, self.region_spread_km, (self.num_regions, 2))
        n_edges = self.num_regions * self.edges_per_region
        edge_region = np.repeat(np.arange(self.num_regions), self.edges_per_region)
        sites = regions[edge_region] + rng.normal(0, self.edge_spread_km, (n_edges, 2))
        device_edge = np.repeat(np.arange(n_edges), self.devices_per_edge)
        devices = sites[device_edge] + rng.normal(0, self.device_spread_km, (self.num_devices, 2))
        coords = np.vstack([devices, np.zeros((1, 2))])
        return GeoLayout(coords, device_edge.astype(np.int64), edge_region[device_edge])

    def latency_ms(self, coords: F64) -> F64:
        """Pairwise latencies of ``coords`` (km), 0 on the diagonal."""
        lat = self.base_latency_ms + self.route_factor * distances_from_coords(coords) / 200.0
        np.fill_diagonal(lat, 0.0)
        return lat


@dataclass(frozen=True, eq=False)
class GeoLayout:
    """Generated sites: ``coords_km`` (devices, then the center), true edge and region."""

    coords_km: F64
    edge_of: I64
    region_of: I64

    def matrix(self, model: GeoModel) -> LatencyMatrix:
        """The latency matrix with ids ``0..n-1`` and ``center``."""
        n = self.edge_of.size
        return LatencyMatrix((*map(str, range(n)), "center"), model.latency_ms(self.coords_km))


@dataclass(frozen=True, eq=False)
class NetworkModel:
    """Tier links plus optional site-to-site latencies.

    Attributes:
        links: bandwidth and base latency of each tier.
        latency: site latencies; client ``i`` sits at row ``i``.
        hosts: aggregator name -> row of its site (from the planner).
    """

    links: TierLinks
    latency: LatencyMatrix | None = None
    hosts: Mapping[str, int] = field(default_factory=dict)

    def hop_latency_s(self, sender: int | None, receiver: str, tier: Tier) -> float:
        """Latency from site ``sender`` to aggregator ``receiver`` of ``tier``."""
        base = self.links.into(tier).latency_s
        host = self.hosts.get(receiver)
        if self.latency is None or sender is None or host is None:
            return base
        return base + float(self.latency.latency_ms[sender, host]) / 1e3

    def link(self, tier: Tier) -> Link:
        return self.links.into(tier)

    def latency_s_matrix(self) -> F64 | None:
        """The matrix in seconds (for the planner's cost model), or None."""
        return None if self.latency is None else self.latency.latency_ms / 1e3
