"""HierFAVG's aggregation periods at one node of the tree, written once (no I/O).

HierFAVG (Liu et al., "Client-Edge-Cloud Hierarchical Federated Learning", ICC 2020),
extended to three tiers: an edge runs ``kappa_edge`` edge rounds (its clients train
from its local model, it averages them and applies the mean) for every round of its
parent; a region runs ``kappa_region`` region rounds for every center round. Both
drivers run a node's periods through this module: the simulator's tree walk
(:mod:`fedstrata.sim.tree_round`) and the runtime's aggregator tiers
(:mod:`fedstrata.runtime.tier_periods`), so a deployment with a ``topology`` section
means what the simulation does.

* :class:`Periods`: how often each tier aggregates, and the numbering of edge rounds
  (a client's randomness is derived from the edge round it trains in: global round
  ``r`` covers edge rounds ``r * kappa_edge * kappa_region`` onwards).
* :class:`NodePeriod`: one node's local model through its repeated periods and what
  it sends up at the end: its model change since the parent's broadcast times the
  last period's total weight (a mergeable partial :class:`MeanState`).
* :func:`edge_members`: the clients of one edge in a global round's cohort, drawn once
  for the whole tree and cut below each edge (sampling below the tier).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedstrata.aggregation.mean import MeanState
from fedstrata.coordinator.topology import Tier, Topology
from fedstrata.core.params import FloatVector
from fedstrata.errors import ConfigError

__all__ = ["NodePeriod", "Periods", "edge_members", "node_ids", "period_partial"]


@dataclass(frozen=True)
class Periods:
    """Aggregation periods of the tiers.

    Attributes:
        kappa_edge: edge rounds per region (or center) aggregation.
        kappa_region: region rounds per center aggregation.

    Raises:
        ConfigError: a kappa that is not an int >= 1.
    """

    kappa_edge: int = 1
    kappa_region: int = 1

    def __post_init__(self) -> None:
        for name in ("kappa_edge", "kappa_region"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Periods.{name} must be an int >= 1, got {value!r}")

    @property
    def edge_rounds_per_global(self) -> int:
        """Edge rounds in one global (center) round."""
        return self.kappa_edge * self.kappa_region

    def repeats(self, tier: Tier) -> int:
        """Periods a node of ``tier`` runs per round of its parent (the center: 1)."""
        return {Tier.EDGE: self.kappa_edge, Tier.REGION: self.kappa_region}.get(tier, 1)

    def stride(self, tier: Tier) -> int:
        """Edge rounds between two periods of a node of ``tier``."""
        return 1 if tier is Tier.EDGE else self.kappa_edge

    def base(self, global_round: int) -> int:
        """The first edge round of ``global_round``."""
        return global_round * self.edge_rounds_per_global

    def rounds(self, tier: Tier, base: int) -> list[int]:
        """The first edge round of each period of a node of ``tier`` that starts at
        edge round ``base``."""
        step = self.stride(tier)
        return [base + i * step for i in range(self.repeats(tier))]

    def global_round(self, edge_round: int) -> int:
        """The global round an edge round belongs to."""
        return edge_round // self.edge_rounds_per_global


def period_partial(model: FloatVector, local: FloatVector, last: MeanState) -> MeanState:
    """What a node sends up after several periods: its model change since ``model``
    (the parent's broadcast) times the last period's total weight, with that period's
    counts and metrics, so the parent's weighted mean is HierFAVG's."""
    delta = (local - model).astype(np.float64) * last.total_weight
    return MeanState(delta, last.total_weight, last.count, last.metrics)


@dataclass(eq=False)
class NodePeriod:
    """One node's local model through its ``repeats`` periods from ``model``.

    After each period the driver calls :meth:`after` with the period's total weight
    and how to finalize its mean; the node applies the mean to its local model (a node
    of one period keeps the parent's model). :meth:`finish` gives what the node sends
    up: with one period (or an empty last period) the last period's state itself,
    else :func:`period_partial`.
    """

    model: FloatVector
    repeats: int
    local: FloatVector = field(init=False)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ConfigError(f"NodePeriod.repeats must be >= 1, got {self.repeats}")
        self.local = self.model

    def after(self, weight: float, finalize: Callable[[], FloatVector]) -> None:
        """A period ended with ``weight`` folded in: apply its mean locally."""
        if self.repeats > 1 and weight > 0:
            self.local = self.local + finalize()

    def finish(
        self, state: object, weight: float, partial: Callable[[object], MeanState]
    ) -> object:
        """The node's result after its last period (``state``, of ``weight``)."""
        if self.repeats == 1 or weight <= 0:
            return state
        return period_partial(self.model, self.local, partial(state))


def edge_members(cohort: Sequence[int] | np.ndarray, clients: Sequence[int]) -> list[int]:
    """The edge's ``clients`` (in the edge's order) that are in the round's ``cohort``."""
    chosen = {int(c) for c in np.asarray(cohort).tolist()}
    return [int(c) for c in clients if int(c) in chosen]


def node_ids(topology: Topology) -> dict[str, int]:
    """Each node's id: its rank among the tree's node names (the key of its hop's
    randomness and of its partial codec's error feedback)."""
    names = sorted(n.name for n in topology.root.walk())
    return {name: i for i, name in enumerate(names)}
