"""How one node of the aggregation tree aggregates: the seam every tier goes through.

A node's aggregation is a small protocol, :class:`TierAggregation`: ``init`` an empty
state, ``fold`` a client's result into it, ``send`` a child's partial up its hop (the
bytes on the wire and what the parent merges), ``merge`` a child's hop into the
parent's state, ``close_s`` the node's period after its last arrival (the seconds
it computes then: 0 for a mean), and ``finalize`` the state into the node's mean
update. The tree driver (:mod:`fedstrata.sim.tree_round`) only calls these, so
another scheme plugs in as one more implementation without touching the driver:
secure aggregation with two-tier masks (:mod:`fedstrata.sim.tree_secagg`), where a
client's fold adds a masked ring vector, an edge's ``close_s`` unmasks its devices'
masks and the center's ``close_s`` removes the cluster masks.

* :class:`MeanTier` (every tier by default): the client-tier aggregator (the weighted
  mean, or the scheduler's settlement-weighted mean) folds client results; partials
  are :class:`~fedstrata.aggregation.MeanState`\\ s merged exactly, or re-compressed
  for the hop with a :class:`~fedstrata.compress.ChainCodec` and its own error
  feedback keyed by the sending node.
* :class:`RobustCenter` (the center under ``server.aggregator`` median, trimmed mean,
  Krum, or your own aggregator ``pkg.mod:rule``; :mod:`fedstrata.aggregation.edge_means`,
  shared with the runtime's center): each child's partial *mean* enters
  the center's aggregator as one vector with the child's total weight (the robust rules
  ignore it; your rule gets it as that vector's weight), so the statistic is taken over
  the edges' or regions' aggregates and its output is what the center applies; the
  center's own clients (a depth-one tree) enter one by one, as in the flat simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fedstrata.aggregation import MeanState, WeightedMean
from fedstrata.aggregation.edge_means import CenterState, add_partial_mean, add_partial_payload
from fedstrata.aggregation.hop import encode_partial_mean, merge_partial_mean
from fedstrata.aggregation.protocol import Aggregator
from fedstrata.compress import ChainCodec
from fedstrata.coordinator.round_logic import dense_bytes
from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.errors import AggregationError
from fedstrata.pipeline.stage import Pipeline
from fedstrata.sim.intake import fold_result
from fedstrata.sim.tasks import TaskResult

__all__ = ["CenterState", "Hop", "MeanTier", "RobustCenter", "TierAggregation"]


@dataclass(frozen=True, eq=False)
class Hop:
    """A child's partial on its way to the parent.

    Attributes:
        sender: the child's node id (its error-feedback and metric key).
        nbytes: bytes on the hop's link.
        weight: the child's total client weight.
        partial: the child's exact partial (dense hop), or its counts and metrics
            when ``payload`` carries the re-compressed mean.
        payload: the re-compressed mean change, or None on a dense hop.
    """

    sender: int
    nbytes: int
    weight: float
    partial: MeanState
    payload: Payload | None = None


class TierAggregation(Protocol):
    """One node's aggregation; see the module docstring."""

    def init(self, size: int) -> object:
        """An empty state."""
        ...

    def fold(self, state: object, res: TaskResult, weight: float) -> object:
        """Fold a usable client result; raises ``FedstrataError`` if malformed."""
        ...

    def send(self, partial: MeanState, sender: int, sub: int) -> Hop:
        """Prepare a child's ``partial`` for the hop up (edge round ``sub``)."""
        ...

    def merge(self, state: object, hop: Hop) -> object:
        """Merge a child's hop into ``state``."""
        ...

    def partial(self, state: object) -> MeanState:
        """What this node sends up (a mergeable weighted sum)."""
        ...

    def finalize(self, state: object) -> FloatVector:
        """The node's mean update (the center's aggregate)."""
        ...

    def weight(self, state: object) -> float:
        """Total weight folded or merged in (0: nothing to send or apply)."""
        ...

    def client_metrics(self, state: object) -> dict[str, float]:
        """Means of the client-reported metrics (``train_loss``)."""
        ...

    def close_s(self, state: object) -> float:
        """Close the node's period after its last arrival (e.g. a secure aggregation's
        unmasking); the seconds the node computes before its result is ready."""
        ...


@dataclass(eq=False)
class MeanTier:
    """The weighted mean at a node (see the module docstring).

    Attributes:
        clients: folds client results (``WeightedMean`` or a wrapper of it whose state
            is a ``MeanState``, e.g. the scheduler's ``SettlementWeighted``).
        pipeline: decodes client payloads (None: dense updates).
        codec: re-compresses partials for the hops above the edge (None: dense).
        root_seed: seeds the partial codec's randomness per (edge round, node).
    """

    clients: Aggregator[Any]
    pipeline: Pipeline | None = None
    codec: ChainCodec | None = None
    root_seed: int = 0

    def __post_init__(self) -> None:
        self._mean = WeightedMean()
        self.decode_s = 0.0

    def init(self, size: int) -> object:
        return self.clients.init(size)

    def fold(self, state: object, res: TaskResult, weight: float) -> object:
        state, decode_s = fold_result(self.clients, state, res, weight, self.pipeline)
        self.decode_s += decode_s
        return state

    def send(self, partial: MeanState, sender: int, sub: int) -> Hop:
        w = partial.total_weight
        if self.codec is None:
            return Hop(sender, dense_bytes(partial.size), w, partial)
        ctx = RoundContext(sub, self.root_seed).for_client(sender)
        payload = encode_partial_mean(partial, self.codec, ctx)
        return Hop(sender, payload.nbytes, w, partial, payload)

    def merge(self, state: object, hop: Hop) -> object:
        assert isinstance(state, MeanState)
        if hop.payload is None:
            return self._mean.merge(state, hop.partial)
        assert self.codec is not None
        return merge_partial_mean(state, self.codec, hop.payload, hop.partial)

    def partial(self, state: object) -> MeanState:
        assert isinstance(state, MeanState)
        return state

    def finalize(self, state: object) -> FloatVector:
        return self._mean.finalize(self.partial(state))

    def weight(self, state: object) -> float:
        return self.partial(state).total_weight

    def client_metrics(self, state: object) -> dict[str, float]:
        return self._mean.finalize_metrics(self.partial(state))

    def close_s(self, state: object) -> float:
        return 0.0


@dataclass(eq=False)
class RobustCenter:
    """A center-only aggregator (robust, or your own) over its children's partial means.

    Attributes:
        robust: the center's aggregator (median, trimmed mean, Krum, or yours).
        tier: the inner tiers' aggregation (decodes re-compressed hops and the
            center's own clients' payloads).
    """

    robust: Aggregator[Any]
    tier: MeanTier

    def init(self, size: int) -> object:
        return CenterState(self.robust.init(size))

    def fold(self, state: object, res: TaskResult, weight: float) -> object:
        s = _held(state)
        s.held, decode_s = fold_result(self.robust, s.held, res, weight, self.tier.pipeline)
        self.tier.decode_s += decode_s
        s.count += 1
        return s

    def send(self, partial: MeanState, sender: int, sub: int) -> Hop:
        return self.tier.send(partial, sender, sub)

    def merge(self, state: object, hop: Hop) -> object:
        if hop.payload is None:
            return add_partial_mean(self.robust, _held(state), hop.partial, hop.sender)
        assert self.tier.codec is not None
        return add_partial_payload(
            self.robust, _held(state), self.tier.codec, hop.payload, hop.partial,
            sender=hop.sender,
        )  # fmt: skip

    def partial(self, state: object) -> MeanState:
        raise AggregationError("the center's aggregator sends nothing up")

    def finalize(self, state: object) -> FloatVector:
        return self.robust.finalize(_held(state).held)

    def weight(self, state: object) -> float:
        """The number of vectors held (the robust rules count vectors, not weights)."""
        return float(_held(state).count)

    def client_metrics(self, state: object) -> dict[str, float]:
        return self.robust.finalize_metrics(_held(state).held)

    def close_s(self, state: object) -> float:
        return 0.0


def _held(state: object) -> CenterState:
    assert isinstance(state, CenterState)
    return state
