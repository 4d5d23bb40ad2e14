"""An aggregator tier of an explicit tree runs HierFAVG's periods, as the simulator does.

With a ``topology`` section (``mode: explicit``, ``topology.edges`` or
``topology.regions``) a deployment's tiers mean what the simulator's tree means
(:mod:`fedstrata.sim.hierarchy`), through the same node logic
(:mod:`fedstrata.coordinator.periods`):

* **The tree**: the processes that connect form it; an edge is the one of
  ``topology.edges`` whose clients connect to it (or the one it is named, ``node``).
  A client of another edge, or clients of two edges, at one aggregator is a
  misconfigured deployment: :meth:`TreeSpec.identify` raises a ``ConfigError`` naming
  the clients and the edges.
* **Sampling below the tier**: the global round's cohort is drawn once for the whole
  tree with the run's seed (``rounds.clients_per_round``, or Poisson sampling), exactly
  as the simulator's coordinator draws it over every client, and each edge trains its
  share (:func:`~fedstrata.coordinator.periods.edge_members`); a selected client that
  is not connected fails, as a dropout does. Under ``scheduling`` the center draws it
  (and sizes each member's work) over the whole tree and sends it down in the edges'
  tasks (:mod:`fedstrata.runtime.tier_sched`).
* **Failures**: an edge that dies loses its subtree for the round in flight (the
  center fails that participant and applies the others); its clients re-home (their
  ``FailoverLink`` lists a sibling edge or the center) and, from the next round, the
  edge that receives them trains its share of them too (:meth:`TreeSpec.rehomed`).
* **Periods**: for each round of its parent the edge runs ``kappa_edge`` edge rounds
  (:func:`run_periods`): its clients train from its local model with the edge round's
  index (their randomness, as in the simulator), the edge averages them and applies
  the mean; then it sends up its model change times the last round's weight. A
  region runs ``kappa_region`` region rounds over its edges the same way.
* **Deadline**: under ``rounds.deadline_s`` an edge's periods share the parent's
  deadline (as in the simulator, where a client's update is late after the global
  round's deadline whichever edge round it belongs to); each edge round waits for
  what is left of it, and an edge whose time ran out sends up an empty partial. The
  deadline judges client updates at their edge, not the edges' partials (as in the
  simulator): an edge that waited for a late client sends up at the deadline, and the
  center waits for its partial :func:`partial_grace_s` past it.
* **The center's rule**: a robust or custom ``server.aggregator`` runs at the center
  over the edges' means (:class:`~fedstrata.aggregation.edge_means.OverEdgeMeans`, the
  simulator's rule); edges run the weighted mean.
* **Secure aggregation** (``secagg.enabled``): two-tier masks through the edges, as for
  a tier without periods (``runtime/secagg_tier.py``), over each edge's selected
  clients; an edge with fewer than two sits out (:mod:`~fedstrata.runtime.tier_combos`).
* **Downlink compression**: the first period of a node relays its parent's message
  (under a region's later region rounds, the region's local model); later periods
  send the node's local model dense (:class:`~fedstrata.runtime.downlink.LocalModel`),
  as the simulator's tree does.
* **Compression per tier**: the hop's re-compression (``topology.partial_compression``)
  is keyed by the edge's node id and its first edge round, the simulator's keys.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from fedstrata.aggregation.edge_means import OverEdgeMeans
from fedstrata.aggregation.mean import MeanState, WeightedMean
from fedstrata.aggregation.protocol import Aggregator
from fedstrata.builders_privacy import poisson_rate
from fedstrata.builders_tree import explicit_topology, periods
from fedstrata.config import FedConfig
from fedstrata.config.compat_types import NOT_BUILT
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.coordinator.periods import NodePeriod, Periods, edge_members, node_ids
from fedstrata.coordinator.topology import Tier, Topology, TopologyNode
from fedstrata.core.params import FloatVector
from fedstrata.errors import ConfigError
from fedstrata.runtime.downlink import local_downlink

if TYPE_CHECKING:
    from fedstrata.runtime.center import Center
    from fedstrata.runtime.records import RoundRecord, TaskSpec

__all__ = [
    "PeriodsResult",
    "TreeSpec",
    "center_rule",
    "partial_grace_s",
    "run_periods",
    "tree_refusal",
]

log = logging.getLogger(__name__)

_MEAN = WeightedMean()


_TREE = "docs/hierarchy.md"


def tree_refusal(config: FedConfig) -> str | None:
    """Why the runtime cannot run ``config.topology`` as the simulator does (None: it can).

    The message names the setting and the reason (docs/runtime.md, "A ``topology``
    section").
    """
    t, why = config.topology, None
    if t.mode == "flat":
        return None
    if t.mode == "auto":
        why = (
            "topology.mode=auto plans the tree from a latency matrix of simulated sites; a "
            "deployment's tree is the aggregator processes its clients connect to: write it "
            "as topology.mode: explicit with topology.edges (edge -> client ids) or "
            "topology.regions (region -> edge -> client ids)"
        )
    elif t.edge_failure_rate > 0:
        why = (
            "topology.edge_failure_rate models edge failures in the simulator; a "
            "deployment's aggregators fail for real (leave it at 0)"
        )
    else:
        why = _tree_pair_refusal(config)
    return None if why is None else f"{why} ({_TREE}, docs/runtime.md)"


def _tree_pair_refusal(config: FedConfig) -> str | None:
    """A feature that the runtime's explicit tree does not run yet."""
    if config.scheduling.async_.enabled:
        return f"scheduling.async (FedBuff) through aggregator tiers is {NOT_BUILT}"
    return None


def partial_grace_s(deadline_s: float | None) -> float:
    """How long past ``deadline_s`` a tree's center waits for its edges' partials
    (they close their last edge round at the deadline, then send up): a tenth of the
    deadline, at least 2 s."""
    return 0.0 if deadline_s is None else max(2.0, 0.1 * deadline_s)


def center_rule(config: FedConfig, agg: Aggregator[Any]) -> Aggregator[Any]:
    """The center's aggregator over its edges: the mean merges their partials; a robust
    or custom ``server.aggregator`` runs over their means, as in the simulator's tree."""
    if config.server.aggregator == "mean":
        return agg
    return OverEdgeMeans(agg)


@dataclass(frozen=True, eq=False)
class TreeSpec:
    """What every process of an explicit tree knows from the configuration.

    Attributes:
        topology: the configured tree (``topology.edges`` or ``topology.regions``).
        periods: the tiers' aggregation periods.
        policy: the global cohort draw (the simulator's coordinator policy).
        node_ids: each node's id (the key of its hop's randomness).
    """

    topology: Topology
    periods: Periods
    policy: RoundPolicy
    node_ids: dict[str, int]

    @classmethod
    def of(cls, config: FedConfig, num_clients: int) -> TreeSpec:
        """The tree of ``config`` over ``num_clients`` clients.

        Raises:
            ConfigError: the tree does not list every client once.
        """
        r = config.rounds
        topology = explicit_topology(config, num_clients)
        poisson = poisson_rate(config, num_clients)
        policy = RoundPolicy(
            r.clients_per_round, r.min_clients, r.deadline_s, config.seed, poisson_rate=poisson
        )
        return cls(topology, periods(config), policy, node_ids(topology))

    @property
    def edges(self) -> list[TopologyNode]:
        return [n for n in self.topology.root.walk() if n.tier is Tier.EDGE]

    def identify(self, clients: Collection[int], name: str | None = None) -> TopologyNode:
        """The edge that serves ``clients`` (those connected to it), or the edge ``name``.

        Raises:
            ConfigError: no such edge, or ``clients`` are not all clients of one edge.
        """
        by_name = {e.name: e for e in self.edges}
        regions = {n.name: n for n in self.topology.root.children if n.tier is Tier.REGION}
        if name is not None and name in regions:
            return regions[name]  # its children are edge tiers, which check their clients
        if name is not None:
            node = by_name.get(name)
            if node is None:
                raise ConfigError(
                    f"aggregator {name!r} is not an edge or region of the topology "
                    f"{sorted([*by_name, *regions])}"
                )
        else:
            owner = self.topology.parent_of()
            names = sorted({owner.get(c, "?") for c in clients})
            if len(names) != 1 or names[0] == "?":
                raise ConfigError(
                    f"clients {sorted(clients)} connected to one aggregator, but the topology "
                    f"puts them under {names} ('?': no edge): connect each edge's clients to "
                    "its own aggregator (a region's aggregator is named: node='region')"
                )
            node = by_name[names[0]]
        stray = sorted(set(clients) - set(node.clients))
        if stray:
            raise ConfigError(
                f"clients {stray} connected to edge {node.name!r}, which the topology "
                f"lists with clients {list(node.clients)}"
            )
        return node

    def check_center(self, participants: int | None) -> None:
        """The center of this tree serves its edges, one participant each.

        Raises:
            ConfigError: no aggregator tiers, or not one per edge.
        """
        kids = [n.name for n in self.topology.root.children]
        if participants != len(kids):
            raise ConfigError(
                f"the topology puts {len(kids)} aggregators {kids} under the center; it "
                f"must serve that many aggregator tiers (participants), got {participants}"
            )

    def base(self, node: TopologyNode, parent_round: int) -> int:
        """``node``'s first edge round in its parent's round ``parent_round``: a child of
        the center starts the global round's edge rounds; an edge under a region starts
        at the region round it is given (numbered in edge rounds)."""
        if node in self.topology.root.children:
            return self.periods.base(parent_round)
        return parent_round

    def members(
        self, node: TopologyNode, base: int, adopted: Collection[int] = (),
        cohort: Sequence[int] | None = None,
    ) -> list[int]:  # fmt: skip
        """``node``'s clients, and the ``adopted`` ones re-homed to it, in the cohort of
        the global round of edge round ``base`` (``cohort``: the center's scheduled
        draw, :mod:`~fedstrata.runtime.tier_sched`; None: the seeded draw here)."""
        if cohort is None:
            r = self.periods.global_round(base)
            every = np.fromiter(self.topology.root.all_clients(), np.int64)
            cohort = RoundCoordinator(self.policy).select(r, every).tolist()
        return edge_members(cohort, [*node.clients, *sorted(adopted)])

    def is_region(self, name: str) -> bool:
        """Whether ``name`` is a region of the tree."""
        return any(n.name == name and n.tier is Tier.REGION for n in self.topology.root.children)

    def serve_region(self, center: Center) -> None:
        """Make ``center`` a region's: the deadline judges client updates at their
        edges, not its edges' partials, which it waits for :func:`partial_grace_s` past
        the deadline (as the tree's center does)."""
        p = center.coordinator.policy
        center.coordinator = RoundCoordinator(RoundPolicy(None, 1, None, p.root_seed))
        center.wait_grace_s = partial_grace_s(p.deadline_s)

    def rehomed(self, node: TopologyNode, clients: Collection[int]) -> list[int]:
        """Clients of other edges connected to ``node`` once the tree was formed: they
        re-homed after their edge failed (as the simulator's ``rehome`` moves them).
        A region's children are tiers: none.

        Raises:
            ConfigError: a client that no edge of the tree lists.
        """
        if node.tier is not Tier.EDGE:
            return []
        owner = self.topology.parent_of()
        unknown = sorted(c for c in clients if c not in owner)
        if unknown:
            raise ConfigError(f"clients {unknown} are under no edge of the topology")
        return sorted(c for c in clients if owner[c] != node.name)


@dataclass
class PeriodsResult:
    """What an edge's periods produced: the partial to send up (a ``MeanState``; empty
    when nothing was folded in the last period) and each edge round's record."""

    state: MeanState
    records: list[RoundRecord]


async def run_periods(
    center: Center,
    spec: TreeSpec,
    node: TopologyNode,
    task: TaskSpec,
    *,
    params: FloatVector,
    relayed: bytes | None,
    adopted: Collection[int] = (),
    fresh: bool = True,
    cohort: Sequence[int] | None = None,
) -> PeriodsResult:
    """``node``'s periods from the parent's model ``params``: an edge's ``kappa_edge``
    edge rounds over its share of the cohort, a region's ``kappa_region`` region rounds
    over its edges (every connected one).

    The first period broadcasts the parent's bytes (``relayed``) unchanged; later ones
    the node's local model. ``task.deadline_s`` bounds the whole period.
    ``adopted``: clients of failed edges re-homed here; ``cohort``: the center's
    scheduled draw (None: the seeded draw). ``fresh``: ``params`` is the center's model
    (under downlink compression the first period relays its message; False: a region's
    local model, which every period sends dense, as the simulator).
    """
    base = spec.base(node, task.round_idx)
    edge = node.tier is Tier.EDGE
    members = spec.members(node, base, adopted, cohort) if edge else None
    period = NodePeriod(params, spec.periods.repeats(node.tier))
    settings, start, relay = center.settings, center.clock.now(), center.downlink
    records: list[RoundRecord] = []
    state: Any = _MEAN.init(params.shape[0])
    try:
        for i, sub in enumerate(spec.periods.rounds(node.tier, base)):
            left = _left_s(task.deadline_s, center.clock.now() - start)
            if left is not None and left <= 0:
                log.warning("%s: deadline passed before its round %d", node.name, sub)
                state = _MEAN.init(params.shape[0])
                break
            center.settings = dataclasses.replace(settings, round_timeout_s=left)
            center.downlink = local_downlink(relay, period.local, fresh=fresh and i == 0)
            state, record = await center.collect(
                sub, period.local, model=relayed if i == 0 else None,
                task=dataclasses.replace(task, round_idx=sub), members=members,
                limit_s=left or settings.start_timeout_s,
            )  # fmt: skip
            records.append(record)
            period.after(_weight(state), partial(_MEAN.finalize, state))
    finally:
        center.settings, center.downlink = settings, relay
    out = period.finish(state, _weight(state), _as_mean)
    log.info(
        "%s %s: round %d: %d periods, %d updates in the last",
        node.tier.value, node.name, task.round_idx, len(records), _as_mean(state).count,
    )  # fmt: skip
    return PeriodsResult(_as_mean(out), records)


def _left_s(deadline_s: float | None, spent_s: float) -> float | None:
    return None if deadline_s is None else deadline_s - spent_s


def _as_mean(state: object) -> MeanState:
    if not isinstance(state, MeanState):
        raise ConfigError(f"an edge's periods need a mean aggregator, got {type(state).__name__}")
    return state


def _weight(state: object) -> float:
    return _as_mean(state).total_weight
