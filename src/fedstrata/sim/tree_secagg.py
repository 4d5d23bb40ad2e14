"""Secure aggregation at every tier of the simulated tree (issue 12 part 4).

:class:`SecureTier` is the :class:`~fedstrata.sim.tree_node.TierAggregation` of a tree
run with ``secagg.enabled``: it drives :class:`~fedstrata.secagg.TreeSecAgg` (two-tier
masks: device masks cancel in the edge, cluster masks at the center) from the tree
walk, one event at a time.

* **Round start** (:meth:`SecureRound.begin`): every node that holds selected clients
  (an edge; a region after re-homing) is one cluster of the inner protocol; key
  agreement runs in every cluster and among the clusters. A node with exactly one
  selected client cannot hide it (its sum *is* the client): that client **sits out**
  the round (reported failed, it does not train), rather than being re-homed for the
  protocol only, which would send its update over a path the network model does not
  time. Each device's key-agreement seconds and bytes are charged to its own legs
  (compute, uplink, downlink).
* **Fold**: a client's :class:`~fedstrata.secagg.RingCodec` payload (the uplink
  pipeline's codec under secure aggregation, with its clip, ``input_bits`` and
  ``density``) is validated, masked and added into its cluster; a malformed payload
  fails that client only. Weights are integers: examples (or 1 under uniform
  weighting), scaled by the scheduler's settlement factor under allocation.
* **Edge close** (the walk's ``close_s`` after the edge's last arrival): the inner
  protocol ends with the clients that delivered; failed and late clients are
  dropouts whose masks the edge recovers. An edge below its threshold, or one whose
  clients all failed or were late, is an **outer dropout**: logged, counted, and its
  folded clients are reported failed (their updates are not in the sum). The edge's
  unmasking compute and the slowest survivor's masking and unmasking compute delay
  the edge's hop; the unmasking round's bytes are counted.
* **Regions forward** the edges' values and sealed shares (bytes only).
* **Center** (``close_s`` at the root): failed edges are outer dropouts; the outer
  protocol and the cluster-mask removal run, and the decoded mean of exactly the
  surviving clients is the round's aggregate. The center's and the edges' outer
  compute delay the round's end.

The round's protocol figures (:meth:`~fedstrata.secagg.TreeSecAggCost.stats`,
dropouts, sit-outs) go to the round's ``secagg_tree`` record (:meth:`SecureRound.stats`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedstrata.aggregation import MeanState
from fedstrata.aggregation.protocol import Aggregator
from fedstrata.coordinator.topology import Tier, TopologyNode
from fedstrata.core.metrics import SecAggTreeStats
from fedstrata.core.params import FloatVector
from fedstrata.errors import AggregationError, ConfigError, SecAggError
from fedstrata.pipeline.stage import Codec, Pipeline
from fedstrata.sim.settlement import SettlementWeighted
from fedstrata.sim.tasks import TaskResult
from fedstrata.sim.tree_node import Hop

if TYPE_CHECKING:  # the protocol imports cryptography; only a secure run loads it
    from fedstrata.secagg.tree import TreeAggregate, TreeRound, TreeSecAgg

__all__ = ["RoundCharges", "SecureRound", "SecureState", "SecureTier", "secure_round"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class SecureState(MeanState):
    """A node's secure partial: weights and counts in the clear, the sum in the protocol.

    Attributes:
        cluster: the cluster whose clients fold at this node (None: a forwarder).
        clusters: clusters whose value is in this node's partial.
        nbytes: protocol bytes this node sends up (value and report, or relayed).
    """

    cluster: str | None = None
    clusters: list[str] = field(default_factory=list)
    nbytes: int = 0


@dataclass(frozen=True)
class RoundCharges:
    """What the protocol's start charges each device, and who sits out.

    Attributes:
        compute_s: client id -> key-agreement seconds (on its compute leg).
        bytes_up: client id -> key-agreement bytes to its node.
        bytes_down: client id -> key-agreement bytes from its node.
        sit_out: client id -> why it sits out the round.
    """

    compute_s: dict[int, float] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    sit_out: dict[int, str] = field(default_factory=dict)


def _clusters(
    node: TopologyNode, cohort: frozenset[int], parent: str | None
) -> Iterator[tuple[str, str, list[int]]]:
    """(node, its region, its selected clients) for every node holding selected clients."""
    ids = [c for c in node.clients if c in cohort]
    if ids:
        region = node.name if node.tier is not Tier.EDGE else (parent or node.name)
        yield node.name, region, ids
    for kid in node.children:
        yield from _clusters(kid, cohort, node.name if node.tier is Tier.REGION else parent)


@dataclass(eq=False)
class SecureRound:
    """The tree round's secure aggregation shared by every node's :class:`SecureTier`.

    Attributes:
        secagg: the protocol component (ring codec and options).
        codec: the uplink pipeline's codec (must be ``secagg``'s ring codec).
        names: node id -> node name (the walk names hops' senders by id).
        weight_factor: the scheduler's settlement factor per client (None: 1).
    """

    secagg: TreeSecAgg
    codec: Codec
    names: dict[int, str]
    weight_factor: Callable[[int], float] | None = None

    def __post_init__(self) -> None:
        self._reset(-1)

    def _reset(self, round_idx: int) -> None:
        self.round_idx = round_idx
        self.rnd: TreeRound | None = None
        self.cluster_of: dict[int, str] = {}
        self.aggregate: TreeAggregate | None = None
        self.outer_dropouts: dict[str, str] = {}
        self.lost: dict[int, str] = {}
        self.sat_out = 0
        self.unmask_bytes_up = 0
        self.unmask_bytes_down = 0
        self.outer_bytes_up = 0
        self._sent: dict[str, int] = {}
        self._ka: dict[int, tuple[int, int]] = {}
        self.withheld = False

    def begin(
        self, round_idx: int, root: TopologyNode, cohort: frozenset[int], failed: set[str]
    ) -> RoundCharges:
        """Open the round over the cohort's clusters; see the module docstring."""
        self._reset(round_idx)
        charges = RoundCharges()
        clusters, regions = {}, {}
        for name, region, ids in _clusters(root, cohort, None):
            if len(ids) < 2:
                charges.sit_out[ids[0]] = (
                    f"client {ids[0]}: alone among the selected clients of {name!r}; secure "
                    f"aggregation needs >= 2 per cluster, so it sits out the round"
                )
                continue
            clusters[name], regions[name] = ids, region
            self.cluster_of.update(dict.fromkeys(ids, name))
        self.sat_out = len(charges.sit_out)
        if not clusters:
            return charges
        self.rnd = self.secagg.start_round(round_idx, clusters, regions)
        for cid, cost in self.rnd.cost().devices.items():
            charges.compute_s[cid] = cost.key_agreement_s
            charges.bytes_up[cid], charges.bytes_down[cid] = cost.bytes_up, cost.bytes_down
            self._ka[cid] = (cost.bytes_up, cost.bytes_down)
        for name in sorted(failed & set(clusters)):
            self.rnd.fail_edge(name, f"edge {name} failed")
            self.outer_dropouts[name] = f"edge {name} failed"
        return charges

    def fold(self, state: SecureState, res: TaskResult, weight: float) -> None:
        """Mask a client's ring payload into its cluster (see :meth:`TreeRound.fold`)."""
        cid = res.client_id
        if self.rnd is None or cid not in self.cluster_of:
            raise AggregationError(f"client {cid} is in no secure cluster of this round")
        if res.payload is None:
            raise AggregationError(f"client {cid}: secure aggregation needs a ring payload")
        if self.weight_factor is not None:  # rounded into the ring by the options' rule
            weight *= self.weight_factor(cid)
        name = self.cluster_of[cid]
        self.rnd.fold(name, self.codec, res.payload, weight, client_id=cid, metrics=res.metrics)
        state.cluster = name
        state.total_weight += weight
        state.count += 1

    def close_edge(self, state: SecureState) -> float:
        """End a cluster's inner protocol; seconds of its online compute (0 if it drops)."""
        assert self.rnd is not None
        assert state.cluster is not None
        name = state.cluster
        try:
            outcome = self.rnd.close_edge(name)
        except SecAggError as exc:
            self._drop(name, str(exc))
            state.total_weight, state.count = 0.0, 0
            return 0.0
        cost = self.rnd.cost()
        devices = cost.devices  # empty when the protocol is off (a plaintext reference)
        survivors = [devices[c].online_s for c in outcome.survivors if c in devices]
        masked = self.secagg.codec.spec.body_bytes(self.secagg.codec.count + 1)  # packed
        for cid in (*outcome.survivors, *outcome.dropped):
            if cid not in devices:
                continue
            ka_up, ka_down = self._ka[cid]
            dev = devices[cid]
            sent = dev.bytes_up - ka_up - (masked if cid in outcome.survivors else 0)
            self.unmask_bytes_up += max(sent, 0)
            self.unmask_bytes_down += dev.bytes_down - ka_down
        sent = cost.edges[name].bytes_up + (masked if self.rnd.outer is not None else 0)
        self._sent[name] = sent
        state.clusters.append(name)
        state.nbytes += sent
        return cost.edges[name].online_s + max(survivors, default=0.0)

    def _drop(self, name: str, reason: str) -> None:
        """An outer dropout: its clients' updates are not in the sum."""
        log.warning("round %d: cluster %r is an outer dropout: %s", self.round_idx, name, reason)
        self.outer_dropouts[name] = reason
        if self.rnd is None:
            return
        parties = self.rnd.edges[name]
        for local in sorted(parties.folded):  # the delivered updates that are lost
            cid = parties.ids[local]
            self.lost[cid] = f"client {cid}: cluster {name} left out of the secure sum"

    def finish(self) -> float:
        """Close the round at the center; seconds of the outer protocol's online compute."""
        if self.rnd is None:
            return 0.0
        rnd = self.rnd
        for name, parties in rnd.edges.items():
            if parties.value is None and parties.failed is None:
                why = "no client update reached it (all failed or late)"
                rnd.fail_edge(name, why)
                self._drop(name, why)
        alive = sum(len(p.survivors) for p in rnd.edges.values() if p.arrived)
        floor = self.secagg.options.min_survivors
        if alive < floor:  # distributed DP: fewer noise shares than were accounted
            log.warning(
                "round %d: only %d clients survived in the tree, fewer than the %d whose "
                "noise shares distributed DP accounts; the sum is not unmasked (zero update)",
                self.round_idx, alive, floor,
            )  # fmt: skip
            self.withheld = True
            return 0.0
        try:
            self.aggregate = rnd.finalize()
        except SecAggError as exc:
            log.warning("round %d: no secure aggregate: %s", self.round_idx, exc)
            for parties in rnd.edges.values():
                for local in sorted(parties.folded):
                    cid = parties.ids[local]
                    self.lost.setdefault(cid, f"client {cid}: the round's secure sum failed")
            return 0.0
        from fedstrata.secagg.tree_cost import client_costs

        edges = self.aggregate.cost.edges
        self.outer_bytes_up = sum(edges[e].bytes_up - sent for e, sent in self._sent.items())
        outer = rnd.outer
        edges_s = [c.online_s for c in client_costs(outer.meter.stats())] if outer else [0.0]
        return self.aggregate.cost.center.online_s + max(edges_s)

    def stats(self) -> SecAggTreeStats | None:
        """The round's ``RoundMetrics.secagg_tree`` record (None before a round)."""
        if self.round_idx < 0:
            return None
        counts = SecAggTreeStats(
            clusters=len(self.rnd.edges) if self.rnd else 0,
            outer_dropouts=len(self.outer_dropouts),
            sat_out=self.sat_out,
            lost_clients=len(self.lost),
            unmask_bytes_up=self.unmask_bytes_up,
            outer_bytes_up=self.outer_bytes_up,
            withheld=int(self.withheld),
        )
        if self.aggregate is None:
            lost = int(self.rnd is not None and not self.withheld)
            wall = None if self.rnd is None else self.rnd.wall_s
            return replace(counts, lost=lost, wall_s=wall)
        return replace(
            self.aggregate.cost.stats(),
            clusters=counts.clusters,
            outer_dropouts=counts.outer_dropouts,
            sat_out=counts.sat_out,
            lost_clients=counts.lost_clients,
            unmask_bytes_up=counts.unmask_bytes_up,
            outer_bytes_up=counts.outer_bytes_up,
            survivors=sum(len(s) for s in self.aggregate.survivors.values()),
            weights_capped=self.aggregate.weights_capped,
            withheld=0,
            lost=0,
        )


def secure_round(
    secagg: TreeSecAgg,
    pipeline: Pipeline | None,
    node_ids: Mapping[str, int],
    clients: Aggregator[Any],
) -> SecureRound:
    """The :class:`SecureRound` of a tree run: the pipeline's ring codec, and the
    scheduler's settlement factor when ``clients`` is its settlement-weighted mean.

    Raises:
        ConfigError: no uplink pipeline (secure aggregation needs its ring codec).
    """
    if pipeline is None:
        raise ConfigError("tree secure aggregation needs the uplink pipeline's ring codec")
    factor = clients.planner.weight_factor if isinstance(clients, SettlementWeighted) else None
    names = {i: name for name, i in node_ids.items()}
    return SecureRound(secagg, pipeline.codec, names, factor)


@dataclass(eq=False)
class SecureTier:
    """One tier's view of the :class:`SecureRound` (see the module docstring).

    Attributes:
        shared: the round's secure aggregation.
        at_center: this view is the center's (its ``close_s`` finalizes the round).
    """

    shared: SecureRound
    at_center: bool = False

    def init(self, size: int) -> object:
        return SecureState(np.zeros(0))

    def fold(self, state: object, res: TaskResult, weight: float) -> object:
        assert isinstance(state, SecureState)
        self.shared.fold(state, res, weight)
        return state

    def send(self, partial: MeanState, sender: int, sub: int) -> Hop:
        assert isinstance(partial, SecureState)
        return Hop(sender, partial.nbytes, partial.total_weight, partial)

    def merge(self, state: object, hop: Hop) -> object:
        assert isinstance(state, SecureState)
        assert isinstance(hop.partial, SecureState)
        state.total_weight += hop.weight
        state.count += hop.partial.count
        state.clusters += hop.partial.clusters
        state.nbytes += hop.nbytes
        return state

    def partial(self, state: object) -> MeanState:
        assert isinstance(state, SecureState)
        return state

    def close_s(self, state: object) -> float:
        """Close the node's own cluster; at the center, the round."""
        assert isinstance(state, SecureState)
        seconds = 0.0
        if state.cluster is not None:
            seconds = self.shared.close_edge(state)
        if self.at_center:
            seconds += self.shared.finish()
        return seconds

    def finalize(self, state: object) -> FloatVector:
        aggregate = self.shared.aggregate
        if self.shared.withheld:  # charged to the budget, nothing released
            return np.zeros(self.shared.secagg.codec.size, dtype=np.float32)
        if aggregate is None:
            raise AggregationError(f"round {self.shared.round_idx}: no secure aggregate")
        return aggregate.mean

    def weight(self, state: object) -> float:
        if self.at_center:
            aggregate = self.shared.aggregate
            return 0.0 if aggregate is None else float(aggregate.total_weight)
        assert isinstance(state, SecureState)
        return state.total_weight

    def client_metrics(self, state: object) -> dict[str, float]:
        aggregate = self.shared.aggregate
        return {} if aggregate is None else dict(aggregate.metrics)
