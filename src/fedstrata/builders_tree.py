"""The explicit aggregation tree of a configuration, shared by both drivers.

``topology.mode: explicit`` names the tree: ``topology.edges`` (edge -> client ids,
the edges under the center) or ``topology.regions`` (region -> edge -> client ids).
The simulator (:func:`fedstrata.api.hierarchy.plan_tree`) simulates that tree; the
deployment runtime checks the tree its processes form against it
(:mod:`fedstrata.runtime.tier_periods`). Both number the tree's nodes the same way
(:func:`~fedstrata.coordinator.periods.node_ids`): the key of each node's randomness
and error feedback.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedstrata.config import FedConfig
from fedstrata.coordinator.periods import Periods
from fedstrata.coordinator.topology import Tier, Topology, TopologyNode
from fedstrata.errors import ConfigError

__all__ = ["explicit_topology", "periods"]


def _edge_nodes(edges: Mapping[str, list[int]]) -> tuple[TopologyNode, ...]:
    return tuple(TopologyNode(edge, Tier.EDGE, clients=tuple(ids)) for edge, ids in edges.items())


def explicit_topology(config: FedConfig, n: int) -> Topology:
    """``topology.regions`` (center -> regions -> edges), or ``topology.edges``
    (center -> edges: no region tier, as a deployment's center over edge aggregators).

    Raises:
        ConfigError: neither is given, or they do not list every client 0..n-1
            exactly once.
    """
    t = config.topology
    if t.edges is not None:
        nodes, where = _edge_nodes(t.edges), "topology.edges"
    elif t.regions is not None:
        nodes = tuple(
            TopologyNode(region, Tier.REGION, children=_edge_nodes(edges))
            for region, edges in t.regions.items()
        )
        where = "topology.regions"
    else:
        raise ConfigError("an explicit tree needs topology.edges or topology.regions")
    topology = Topology(TopologyNode("center", Tier.CENTER, children=nodes))
    listed = sorted(topology.root.all_clients())
    if listed != list(range(n)):
        raise ConfigError(f"{where} must list every client 0..{n - 1} exactly once")
    return topology


def periods(config: FedConfig) -> Periods:
    """The tiers' aggregation periods of ``config.topology``."""
    return Periods(config.topology.kappa_edge, config.topology.kappa_region)
