"""Topology planner: cluster clients into edges and edges into regions, predict round times.

Clustering is capacity-constrained k-medoids (Kaufman & Rousseeuw, "Clustering by
means of medoids", 1987; the greedy regret assignment follows Mulvey & Beck, "Solving
capacitated clustering problems", EJOR 1984): medoids are seeded k-medoids++ style,
each point is assigned, in order of regret (second-best minus best distance), to the
nearest medoid with room, clusters below the minimum size are dissolved, and medoids
are re-centred. Distances are latencies (a matrix) or Euclidean distances of
coordinates.

The predictor gives the simulated time of a hierarchical round (HierFAVG: edges
aggregate every round, regions every ``kappa_edge`` edge rounds, the center every
``kappa_region`` region rounds; Liu et al., "Client-Edge-Cloud Hierarchical Federated
Learning", ICC 2020) and of a flat round, tier by tier: compute + transfer, where the
transfer into a receiver is bounded by each sender's link and by the receiver's ingress
shared among concurrent senders. It uses the closed forms of
:mod:`fedstrata.core.timing` (equal shares of a broadcast, ``makespan_bound`` for
an ingress; no event simulation), the module whose event-driven
``fair_share_finish`` times the tree simulator.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from fedstrata.coordinator.topology import Tier, Topology, TopologyNode
from fedstrata.core.timing import equal_share_bps, makespan_bound, transfer_s
from fedstrata.errors import ConfigError

__all__ = [
    "ClusterBounds",
    "CostModel",
    "Link",
    "Plan",
    "TierLinks",
    "TierTimes",
    "cluster",
    "distances_from_coords",
    "plan_topology",
    "predict_round",
    "rehome",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class Link:
    """A tier's link: the receiver's ingress (and sender's egress) bandwidth, and latency.

    Raises:
        ConfigError: bandwidth not > 0 or latency < 0.
    """

    bandwidth_bps: float
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bandwidth_bps) and self.bandwidth_bps > 0):
            raise ConfigError(
                f"Link.bandwidth_bps must be finite and > 0, got {self.bandwidth_bps}"
            )
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise ConfigError(f"Link.latency_s must be finite and >= 0, got {self.latency_s}")


@dataclass(frozen=True)
class TierLinks:
    """Links by receiving tier: LAN into an edge, metro into a region, WAN into the center."""

    lan: Link
    metro: Link
    wan: Link

    def into(self, tier: Tier) -> Link:
        """The link a sender uses to reach a receiver of ``tier``."""
        return {Tier.EDGE: self.lan, Tier.REGION: self.metro, Tier.CENTER: self.wan}[tier]


@dataclass(frozen=True)
class ClusterBounds:
    """Cluster sizes: ``target`` picks the cluster count, ``min_size``/``max_size`` bind.

    Raises:
        ConfigError: sizes not ``1 <= min_size <= target <= max_size``.
    """

    min_size: int
    max_size: int
    target: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_size <= self.target <= self.max_size:
            raise ConfigError(
                "ClusterBounds must satisfy 1 <= min_size <= target <= max_size, got "
                f"min_size={self.min_size}, target={self.target}, max_size={self.max_size}"
            )

    def count(self, n: int) -> int:
        """Number of clusters for ``n`` points: near n/target, within the size bounds."""
        lo = math.ceil(n / self.max_size)
        hi = max(lo, n // self.min_size)
        return int(min(max(round(n / self.target), lo), hi, n))


def distances_from_coords(coords: F64) -> F64:
    """Pairwise Euclidean distances of ``(n, d)`` coordinates.

    Raises:
        ConfigError: ``coords`` is not a finite 2-D array.
    """
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or not np.isfinite(c).all():
        raise ConfigError(f"coords must be a finite (n, d) array, got shape {c.shape}")
    diff = c[:, None, :] - c[None, :, :]
    out: F64 = np.sqrt(np.square(diff).sum(axis=-1))
    return out


def _check_dist(dist: F64) -> F64:
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] == 0:
        raise ConfigError(f"distance matrix must be square and non-empty, got shape {d.shape}")
    if not np.isfinite(d).all() or (d < 0).any():
        raise ConfigError("distance matrix entries must be finite and >= 0")
    return d


def _seed_medoids(d: F64, k: int, rng: np.random.Generator) -> I64:
    """k-medoids++ seeding: each next medoid drawn proportionally to squared distance."""
    medoids = [int(rng.integers(d.shape[0]))]
    for _ in range(1, k):
        near = d[:, medoids].min(axis=1) ** 2
        total = near.sum()
        pick = int(rng.choice(d.shape[0], p=near / total)) if total > 0 else len(medoids)
        medoids.append(pick)
    return np.array(medoids, dtype=np.int64)


def _assign(d: F64, medoids: I64, max_size: int) -> I64:
    """Greedy regret assignment to the nearest medoid with room."""
    dm = d[:, medoids]
    order_m = np.argsort(dm, axis=1, kind="stable")
    regret = (
        np.take_along_axis(dm, order_m[:, 1:2], 1)[:, 0] - dm.min(axis=1)
        if medoids.size > 1
        else np.zeros(d.shape[0])
    )
    labels = np.full(d.shape[0], -1, dtype=np.int64)
    load = np.zeros(medoids.size, dtype=np.int64)
    for i in np.argsort(-regret, kind="stable"):
        j = next(int(j) for j in order_m[i] if load[j] < max_size)
        labels[i], load[j] = j, load[j] + 1
    return labels


def _fill_min(d: F64, labels: I64, medoids: I64, min_size: int) -> I64:
    """Pull the nearest points from clusters above ``min_size`` into smaller ones."""
    sizes = np.bincount(labels, minlength=medoids.size)
    for j in np.flatnonzero(sizes < min_size):
        while sizes[j] < min_size:
            cand = np.flatnonzero((sizes[labels] > min_size) & (labels != j))
            if cand.size == 0:
                break
            i = cand[np.argmin(d[cand, medoids[j]])]
            sizes[labels[i]] -= 1
            labels[i], sizes[j] = j, sizes[j] + 1
    return labels


def _recentre(d: F64, labels: I64, k: int) -> I64:
    medoids = np.empty(k, dtype=np.int64)
    for j in range(k):
        members = np.flatnonzero(labels == j)
        medoids[j] = members[np.argmin(d[np.ix_(members, members)].sum(axis=1))]
    return medoids


def cluster(
    dist: F64, bounds: ClusterBounds, rng: np.random.Generator, iterations: int = 8
) -> tuple[I64, I64]:
    """Capacity-constrained k-medoids (see module docstring).

    Returns:
        ``(labels, medoids)``: cluster of each point (0..k-1) and each cluster's medoid.

    Raises:
        ConfigError: a bad matrix, or more points than ``max_size`` allows in one
            cluster per point (never for n >= 1).
    """
    d = _check_dist(dist)
    n = d.shape[0]
    k = bounds.count(n)
    medoids = _seed_medoids(d, k, rng)
    for _ in range(iterations):
        labels = _assign(d, medoids, bounds.max_size)
        sizes = np.bincount(labels, minlength=k)
        while k > 1 and sizes.min() < bounds.min_size and (n / (k - 1)) <= bounds.max_size:
            keep = np.flatnonzero(sizes != sizes.min())[: k - 1]
            if keep.size < k - 1:
                keep = np.delete(np.arange(k), int(np.argmin(sizes)))
            medoids, k = medoids[keep], k - 1
            labels = _assign(d, medoids, bounds.max_size)
            sizes = np.bincount(labels, minlength=k)
        new = _recentre(d, _fill_min(d, labels, medoids, bounds.min_size), k)
        if np.array_equal(np.sort(new), np.sort(medoids)):
            break
        medoids = new
    labels = _fill_min(d, _assign(d, medoids, bounds.max_size), medoids, bounds.min_size)
    return labels, _recentre(d, labels, k)


@dataclass(frozen=True)
class Plan:
    """A planned tree and the matrix row hosting each aggregator (its medoid)."""

    topology: Topology
    hosts: Mapping[str, int] = field(default_factory=dict)


def plan_topology(
    dist: F64,
    rng: np.random.Generator,
    *,
    edges: ClusterBounds = ClusterBounds(10, 20, 20),
    regions: ClusterBounds = ClusterBounds(5, 10, 5),
    num_clients: int | None = None,
    center_host: int | None = None,
) -> Plan:
    """Cluster clients (rows ``0..num_clients-1`` of ``dist``) into edges, edges into regions.

    Args:
        dist: latency (ms) or distance matrix; rows past ``num_clients`` (e.g. the
            center's site) are not clustered.
        rng: generator for the medoid seeding.
        edges: bounds on clients per edge.
        regions: bounds on edges per region.
        num_clients: clients to place (default: every row).
        center_host: the center's row in ``dist``, if any.

    Raises:
        ConfigError: a bad matrix or ``num_clients`` larger than it.
    """
    d = _check_dist(dist)
    n = d.shape[0] if num_clients is None else num_clients
    if not 1 <= n <= d.shape[0]:
        raise ConfigError(f"num_clients must be in [1, {d.shape[0]}], got {n}")
    labels, medoids = cluster(d[:n, :n], edges, rng)
    e_labels, e_medoids = cluster(d[np.ix_(medoids, medoids)], regions, rng)
    hosts: dict[str, int] = {} if center_host is None else {"center": center_host}
    region_nodes = []
    for r in range(e_medoids.size):
        edge_nodes = []
        for e in np.flatnonzero(e_labels == r):
            name = f"edge-{e}"
            hosts[name] = int(medoids[e])
            members = tuple(int(c) for c in np.flatnonzero(labels == e))
            edge_nodes.append(TopologyNode(name, Tier.EDGE, clients=members))
        hosts[f"region-{r}"] = int(medoids[e_medoids[r]])
        region_nodes.append(TopologyNode(f"region-{r}", Tier.REGION, tuple(edge_nodes)))
    return Plan(Topology(TopologyNode("center", Tier.CENTER, tuple(region_nodes))), hosts)


def rehome(topology: Topology, failed: Collection[str]) -> Topology:
    """Move the clients of failed edges to the smallest live sibling edge, else the region.

    Raises:
        ConfigError: a failed name that is not an edge of ``topology``.
    """
    edges = {n.name for n in topology.root.walk() if n.tier is Tier.EDGE}
    unknown = sorted(set(failed) - edges)
    if unknown:
        raise ConfigError(f"rehome: {unknown} are not edges of the topology")
    return Topology(_rehome_node(topology.root, frozenset(failed)))


def _rehome_node(node: TopologyNode, failed: frozenset[str]) -> TopologyNode:
    children = tuple(_rehome_node(c, failed) for c in node.children)
    orphans = [c for ch in children if ch.name in failed for c in ch.clients]
    live = [ch for ch in children if ch.name not in failed]
    if not orphans:
        return replace(node, children=tuple(live))
    if not live:
        return replace(node, children=(), clients=(*node.clients, *orphans))
    target = min(range(len(live)), key=lambda i: len(live[i].clients))
    live[target] = replace(live[target], clients=(*live[target].clients, *orphans))
    return replace(node, children=tuple(live))


@dataclass(frozen=True, eq=False)
class CostModel:
    """What a round costs each client and each partial aggregate.

    Attributes:
        compute_s: each client's local-training seconds (examples x FLOPs / FLOP/s).
        uplink_bps: each client's access uplink.
        downlink_bps: each client's access downlink.
        model_bytes: bytes of one model download.
        update_bytes: bytes of one client update.
        partial_bytes: bytes of one partial aggregate sent up a tier.
        latency_s: ``(sender_host, receiver_host) -> seconds`` extra to the link's
            latency (e.g. from a latency matrix); ``None`` adds nothing.
    """

    compute_s: F64
    uplink_bps: F64
    downlink_bps: F64
    model_bytes: int
    update_bytes: int
    partial_bytes: int
    latency_s: F64 | None = None


@dataclass(frozen=True)
class TierTimes:
    """Predicted seconds: one edge round, region sync, center sync, and a global round."""

    edge_round_s: float
    region_sync_s: float
    global_round_s: float


def _hop_latency(cost: CostModel, link: Link, a: int | None, b: int | None) -> float:
    extra = 0.0 if cost.latency_s is None or a is None or b is None else cost.latency_s[a, b]
    return link.latency_s + float(extra)


def predict_round(
    topology: Topology,
    cost: CostModel,
    links: TierLinks,
    *,
    kappa_edge: int = 1,
    kappa_region: int = 1,
    hosts: Mapping[str, int] | None = None,
) -> TierTimes:
    """Predicted simulated seconds of one global round of ``topology`` (flat or deeper).

    Raises:
        ConfigError: a kappa below 1.
    """
    if kappa_edge < 1 or kappa_region < 1:
        raise ConfigError(f"kappas must be >= 1, got {kappa_edge}, {kappa_region}")
    ctx = _Predict(cost, links, {Tier.EDGE: kappa_edge, Tier.REGION: kappa_region}, hosts or {})
    total = ctx.cycle(topology.root)
    edges = [n for n in topology.root.walk() if n.tier is Tier.EDGE]
    regions = [n for n in topology.root.walk() if n.tier is Tier.REGION]
    edge_s = max((ctx.iteration(e) for e in edges), default=total)
    region_s = max((ctx.iteration(r) for r in regions), default=total)
    return TierTimes(edge_s, region_s, total)


@dataclass(frozen=True)
class _Predict:
    cost: CostModel
    links: TierLinks
    repeats: Mapping[Tier, int]
    hosts: Mapping[str, int]

    def cycle(self, node: TopologyNode) -> float:
        return self.repeats.get(node.tier, 1) * self.iteration(node)

    def iteration(self, node: TopologyNode) -> float:
        """Broadcast to the children, their work, uploads into ``node``'s shared ingress."""
        link, c = self.links.into(node.tier), self.cost
        host = self.hosts.get(node.name)
        ids = np.asarray(node.clients, dtype=np.int64)
        m = ids.size + len(node.children)
        share = equal_share_bps(link.bandwidth_bps, m)
        down = np.concatenate(
            [
                transfer_s(0.0, c.model_bytes, np.minimum(c.downlink_bps[ids], share)),
                np.full(len(node.children), transfer_s(0.0, c.model_bytes, share)),
            ]
        )
        lat = np.array(
            [_hop_latency(c, link, int(i), host) for i in ids]
            + [_hop_latency(c, link, self.hosts.get(ch.name), host) for ch in node.children]
        )
        work = np.concatenate([c.compute_s[ids], [self.cycle(ch) for ch in node.children]])
        bits = np.concatenate(
            [
                np.full(ids.size, c.update_bytes * 8.0),
                np.full(len(node.children), 8.0 * c.partial_bytes),
            ]
        )
        caps = np.concatenate(
            [
                np.minimum(c.uplink_bps[ids], link.bandwidth_bps),
                np.full(len(node.children), link.bandwidth_bps),
            ]
        )
        ready = lat + down + work
        return makespan_bound(ready, bits, caps, link.bandwidth_bps) + float(lat.max(initial=0.0))
