"""Build the aggregation tree, the network model and the hierarchical simulation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedstrata.aggregation import WeightedMean
from fedstrata.aggregation.protocol import Aggregator
from fedstrata.api.components import (
    broadcaster,
    local_plan,
    privacy_hooks,
    round_coordinator,
    sim_settings,
)
from fedstrata.builders import ServerStrategy, server_strategy
from fedstrata.builders_tree import explicit_topology
from fedstrata.config import FedConfig
from fedstrata.coordinator.planner import (
    ClusterBounds,
    CostModel,
    Link,
    TierLinks,
    plan_topology,
    predict_round,
)
from fedstrata.coordinator.topology import Topology, TopologyNode
from fedstrata.core.context import derive_rng
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import HEADER_SIZE
from fedstrata.core.timing import transfer_s
from fedstrata.core.training import ClientPopulation, Trainer
from fedstrata.errors import ConfigError
from fedstrata.pipeline import Pipeline
from fedstrata.sim import Executor, ProfileTable
from fedstrata.sim.hierarchy import HierarchicalSimulation, HierSettings
from fedstrata.sim.network import GeoModel, LatencyMatrix, NetworkModel

if TYPE_CHECKING:
    from fedstrata.privacy import BudgetAllocator
    from fedstrata.scheduling import Registry
    from fedstrata.secagg import RingCodec, SecAggAggregator
    from fedstrata.secagg.tree import TreeSecAgg

__all__ = [
    "TreePlan",
    "hierarchical_simulation",
    "plan_tree",
    "predicted_tree_round_s",
    "tree_margin_s",
    "tree_secagg",
]


@dataclass(frozen=True)
class TreePlan:
    """The tree, where each aggregator sits in the latency matrix, and the links."""

    topology: Topology
    hosts: dict[str, int]
    matrix: LatencyMatrix
    links: TierLinks


def _links(config: FedConfig) -> TierLinks:
    t = config.topology
    return TierLinks(
        Link(t.lan_mbps * 1e6, t.lan_ms / 1e3),
        Link(t.metro_mbps * 1e6, t.metro_ms / 1e3),
        Link(t.wan_mbps * 1e6, t.wan_ms / 1e3),
    )


def _matrix(config: FedConfig, n: int) -> LatencyMatrix:
    t = config.topology
    if t.latency_path is not None:
        matrix = LatencyMatrix.load(t.latency_path)
        missing = [c for c in (*map(str, range(n)), "center") if c not in matrix.ids]
        if missing:
            raise ConfigError(f"topology.latency_path lacks sites {missing[:5]} (of {n} + center)")
        return matrix
    edges_per_region = max(1, math.ceil(n / (t.geo_regions * t.edge_size)))
    geo = GeoModel(t.geo_regions, edges_per_region, t.edge_size)
    layout = geo.generate(derive_rng(config.seed, 0, -1, "geography"))
    keep = np.r_[np.arange(n), geo.num_devices]  # the first n devices and the center
    full = geo.latency_ms(layout.coords_km)
    return LatencyMatrix((*map(str, range(n)), "center"), full[np.ix_(keep, keep)])


def plan_tree(config: FedConfig, n: int) -> TreePlan:
    """The tree of ``config.topology`` for ``n`` clients (flat, planned or explicit)."""
    t, matrix = config.topology, _matrix(config, n)
    center = matrix.index("center")
    if t.mode == "flat":
        return TreePlan(Topology.flat(range(n)), {"center": center}, matrix, _links(config))
    if t.mode == "explicit":
        return TreePlan(explicit_topology(config, n), {"center": center}, matrix, _links(config))
    plan = plan_topology(
        matrix.latency_ms, derive_rng(config.seed, 0, -1, "plan"),
        edges=ClusterBounds(t.edge_min, t.edge_max, t.edge_size),
        regions=ClusterBounds(t.region_min, t.region_max, t.region_size),
        num_clients=n, center_host=center,
    )  # fmt: skip
    return TreePlan(plan.topology, {**plan.hosts, "center": center}, matrix, _links(config))


def predicted_tree_round_s(
    config: FedConfig, tree: TreePlan, trainer: Trainer, sizes: np.ndarray, profiles: ProfileTable
) -> float:
    """Predicted seconds of one global round over ``tree`` (what the tree simulation takes).

    The cohort of each of the run's first rounds (at most 8) is drawn as the run's
    coordinator draws it (availability, ``clients_per_round``, Poisson sampling); the
    tree pruned to it is timed with transfers sharing each tier's link
    (:func:`~fedstrata.coordinator.planner.predict_round`), and the rounds averaged.
    """
    plan = local_plan(config.client)
    examples = np.array([plan.num_samples(int(s)) for s in sizes])
    dense = HEADER_SIZE + 4 * trainer.spec.size
    ids = np.arange(len(sizes))
    _, compute_s, _ = profiles.legs_s(ids, examples, trainer.flops_per_example, dense, dense)
    cost = CostModel(
        compute_s, profiles.uplink_bps,
        profiles.downlink_bps, dense, dense, dense, tree.matrix.latency_ms / 1e3,
    )  # fmt: skip
    t, coordinator = config.topology, round_coordinator(config, len(sizes))
    times = []
    for r in range(min(config.rounds.rounds, 8)):
        online = profiles.available(derive_rng(config.seed, r, -1, "online"))
        root = _pruned(tree.topology.root, set(coordinator.select(r, online).tolist()))
        if root is None:
            times.append(0.0)
            continue
        times.append(
            predict_round(
                Topology(root), cost, tree.links, kappa_edge=t.kappa_edge,
                kappa_region=t.kappa_region, hosts=tree.hosts,
            ).global_round_s
        )  # fmt: skip
    return float(np.mean(times))


def _pruned(node: TopologyNode, cohort: set[int]) -> TopologyNode | None:
    """``node`` with only the ``cohort``'s clients and the nodes above them."""
    kids = tuple(k for k in (_pruned(c, cohort) for c in node.children) if k is not None)
    clients = tuple(c for c in node.clients if c in cohort)
    if not kids and not clients:
        return None
    return TopologyNode(node.name, node.tier, kids, clients)


def tree_margin_s(
    topology: Topology, network: NetworkModel, profiles: ProfileTable, size: int
) -> float:
    """Seconds of a client's round that its own links do not show: the dense model's
    way down to its edge (each hop's latency plus its egress shared by all siblings,
    an upper bound of the fair share) and the tree's client hop latency above the
    device's own, both ways. The scheduler plans within the deadline less this.
    """
    nbytes = HEADER_SIZE + 4 * size
    worst = 0.0

    def visit(node: TopologyNode, reached_s: float) -> None:
        nonlocal worst
        egress = len(node.children) + len(node.clients)
        send_s = float(transfer_s(0.0, egress * nbytes, network.link(node.tier).bandwidth_bps))
        for c in node.clients:
            extra = network.hop_latency_s(c, node.name, node.tier) - profiles.latency_s[c]
            worst = max(worst, reached_s + send_s + 2 * max(extra, 0.0))
        for kid in node.children:
            hop_s = network.hop_latency_s(network.hosts.get(kid.name), node.name, node.tier)
            visit(kid, reached_s + hop_s + send_s)

    visit(topology.root, 0.0)
    return worst


def tree_secagg(
    pipeline: Pipeline | None, secure: tuple[RingCodec, SecAggAggregator] | None
) -> TreeSecAgg | None:
    """Secure aggregation at every tier (two-tier masks), or None when ``secagg`` is off.

    ``secure``: what :func:`~fedstrata.api.components.secure_aggregation` built for the
    run; the ring codec is the uplink pipeline's, the protocol parameters are the flat
    secure aggregator's.
    """
    if secure is None:
        return None
    from fedstrata.secagg import RingCodec  # deferred: imports cryptography
    from fedstrata.secagg.tree import TreeSecAgg, TreeSecAggOptions

    codec = pipeline.codec if pipeline is not None else None
    if not isinstance(codec, RingCodec):
        raise ConfigError("secagg.enabled on a tree needs the pipeline's ring codec")
    return TreeSecAgg(codec, TreeSecAggOptions.like(secure[1].options))


def hierarchical_simulation(
    config: FedConfig,
    *,
    dataset: ClientPopulation,
    trainer: Trainer,
    executor: Executor,
    pipeline: Pipeline | None,
    profiles: ProfileTable,
    params: FloatVector,
    strategy: ServerStrategy | None = None,
    registry: Registry | None = None,
    secure: tuple[RingCodec, SecAggAggregator] | None = None,
    allocator: BudgetAllocator | None = None,
) -> HierarchicalSimulation:
    """HierFAVG over the planned tree on the simulated network, with the config's
    cohort, deadline, downlink, central DP, scheduler, center aggregator and secure
    aggregation at every tier.

    ``strategy``: the server optimizer and aggregator (default: the config's); a
    robust aggregator, or your own, runs at the center over its children's partial
    means (with their weights); edges and regions run the weighted mean.
    """
    t = config.topology
    strategy = strategy or server_strategy(config)
    tree = plan_tree(config, dataset.num_clients)
    partial = t.partial_compression.spec() if t.partial_compression.enabled else None
    network = NetworkModel(tree.links, tree.matrix, tree.hosts)
    planner = selector = None
    clients: Aggregator[Any] = WeightedMean()
    if config.scheduling.enabled:
        from fedstrata.api.scheduling import scheduler  # deferred: SQLAlchemy, Alembic

        deadline = config.rounds.deadline_s
        if deadline is not None:
            margin = tree_margin_s(tree.topology, network, profiles, trainer.spec.size)
            deadline = max(deadline - margin, 1e-3 * deadline)
        planner, selector, clients = scheduler(
            config, dataset=dataset, trainer=trainer, profiles=profiles, registry=registry,
            aggregator=clients, deadline_s=deadline,
        )  # fmt: skip
    at_center = strategy.custom_aggregator or config.server.aggregator != "mean"
    center = strategy.aggregator if at_center else None
    return HierarchicalSimulation(
        sim_settings(config),
        HierSettings(t.kappa_edge, t.kappa_region, partial, t.edge_failure_rate),
        tree.topology, network, trainer, executor,
        dataset.client_sizes(), dataset.test, profiles, strategy.optimizer, pipeline,
        coordinator=round_coordinator(config, dataset.num_clients, selector),
        aggregator=clients, center_aggregator=center, broadcast=broadcaster(config, params),
        hooks=privacy_hooks(
            config, pipeline, dataset.num_clients, trainer.spec.size, allocator
        ),
        planner=planner, secure=tree_secagg(pipeline, secure),
    )  # fmt: skip
