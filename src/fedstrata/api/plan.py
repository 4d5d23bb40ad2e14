"""``fedstrata plan``: show the tree a config builds and what a round should cost."""

from __future__ import annotations

from fedstrata.api.components import build_dataset, profiles, trainer_factory
from fedstrata.api.hierarchy import plan_tree, predicted_round_s
from fedstrata.config import FedConfig
from fedstrata.coordinator.topology import TopologyNode

__all__ = ["describe_plan"]


def _lines(node: TopologyNode, depth: int = 0) -> list[str]:
    clients = len(list(node.all_clients()))
    own = f", {len(node.clients)} direct clients" if node.clients and node.children else ""
    out = [f"{'  ' * depth}{node.tier.value} {node.name}: {clients} clients{own}"]
    if node.children and all(not c.children for c in node.children) and len(node.children) > 8:
        sizes = sorted(len(c.clients) for c in node.children)
        out.append(f"{'  ' * (depth + 1)}{len(node.children)} edges of {sizes[0]}-{sizes[-1]}")
        return out
    for child in node.children:
        out += _lines(child, depth + 1)
    return out


def describe_plan(config: FedConfig) -> str:
    """The tree, and the predicted seconds of one global round for flat and for it."""
    dataset = build_dataset(config.data)
    trainer = trainer_factory(config, dataset)()
    tree = plan_tree(config, dataset.num_clients)
    table = profiles(config, dataset.num_clients)
    flat_s, tree_s = predicted_round_s(config, tree, trainer, dataset.client_sizes(), table)
    t = config.topology
    lines = [f"topology: {t.mode} (depth {tree.topology.depth})", *_lines(tree.topology.root)]
    lines += [
        "",
        f"links: LAN {t.lan_mbps:g} Mb/s, metro {t.metro_mbps:g} Mb/s, WAN {t.wan_mbps:g} Mb/s",
        f"model: {trainer.spec.size:,} parameters",
        f"predicted global round, flat:   {flat_s:10.2f} s",
        f"predicted global round, {t.mode + ':':7s} {tree_s:10.2f} s"
        f"  (kappa_edge {t.kappa_edge}, kappa_region {t.kappa_region})",
    ]
    return "\n".join(lines)
