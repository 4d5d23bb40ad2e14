"""The aggregation tree: center -> (regions -> edges ->) clients.

Flat federated learning is the depth-one special case: the center's children are the
clients. Every inner node runs the same (mergeable) aggregator on its children's
partial aggregates, so deeper trees need no other round logic.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from fedstrata.errors import ConfigError

__all__ = ["Tier", "Topology", "TopologyNode"]


class Tier(StrEnum):
    CENTER = "center"
    REGION = "region"
    EDGE = "edge"


@dataclass(frozen=True)
class TopologyNode:
    """An aggregator in the tree: its tier, name, child aggregators and clients."""

    name: str
    tier: Tier
    children: tuple[TopologyNode, ...] = ()
    clients: tuple[int, ...] = ()

    def walk(self) -> Iterator[TopologyNode]:
        """This node and every node below it, parents first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def all_clients(self) -> Iterator[int]:
        for node in self.walk():
            yield from node.clients


@dataclass(frozen=True)
class Topology:
    """A validated aggregation tree.

    Raises:
        ConfigError: the root is not the center, names repeat, or a client hangs
            under two aggregators.
    """

    root: TopologyNode
    depth: int = field(init=False)

    def __post_init__(self) -> None:
        if self.root.tier is not Tier.CENTER:
            raise ConfigError(f"topology root must be the center, got tier {self.root.tier.value}")
        names = [n.name for n in self.root.walk()]
        if len(set(names)) != len(names):
            raise ConfigError("topology node names must be unique")
        clients = list(self.root.all_clients())
        if len(set(clients)) != len(clients):
            raise ConfigError("a client appears under more than one aggregator")
        object.__setattr__(self, "depth", _depth(self.root))

    @classmethod
    def flat(cls, client_ids: Sequence[int]) -> Topology:
        """Every client reports straight to the center."""
        return cls(TopologyNode("center", Tier.CENTER, clients=tuple(int(c) for c in client_ids)))

    @property
    def is_flat(self) -> bool:
        return self.depth == 1

    def to_json(self) -> dict[str, Any]:
        """The tree as JSON (a checkpoint's ``topology`` part: edges may have failed
        and their clients been re-homed)."""
        return _node_json(self.root)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Topology:
        """Inverse of :meth:`to_json`.

        Raises:
            ConfigError: the JSON is not a valid tree (names the fault).
        """
        return cls(_node_from_json(value))

    def parent_of(self) -> dict[int, str]:
        """Client id -> name of the aggregator it reports to."""
        return {c: node.name for node in self.root.walk() for c in node.clients}


def _depth(node: TopologyNode) -> int:
    return 1 + max((_depth(c) for c in node.children), default=0)


def _node_json(node: TopologyNode) -> dict[str, Any]:
    return {
        "name": node.name,
        "tier": node.tier.value,
        "clients": list(node.clients),
        "children": [_node_json(c) for c in node.children],
    }


def _node_from_json(value: Mapping[str, Any]) -> TopologyNode:
    try:
        return TopologyNode(
            str(value["name"]),
            Tier(value["tier"]),
            tuple(_node_from_json(c) for c in value["children"]),
            tuple(int(c) for c in value["clients"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"not a topology node: {exc!r}") from exc
