"""The center's own rule over its children's partial means, written once.

Under a robust ``server.aggregator`` (median, trimmed mean, Krum) or your own rule, a
tree's edges and regions still run the weighted mean, and the center runs the rule
over its children's aggregates: each child's partial *mean* enters the rule as one
vector with the child's total weight (the robust rules ignore it; your rule gets it),
so the statistic is taken over the edges' aggregates. The simulator's tree
(:class:`fedstrata.sim.tree_node.RobustCenter`) and the runtime's center over edge
aggregators (:class:`OverEdgeMeans`, wrapped by ``Deployment.center``) both call
:func:`add_partial_mean` and :func:`add_partial_payload`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, final

import numpy as np

from fedstrata.aggregation.mean import MeanState
from fedstrata.aggregation.protocol import UNKNOWN_CLIENT, Aggregator
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.errors import AggregationError
from fedstrata.pipeline.stage import Codec

__all__ = ["CenterState", "OverEdgeMeans", "add_partial_mean", "add_partial_payload"]


@dataclass(eq=False)
class CenterState:
    """The center rule's state and how many vectors (children's means or the center's
    own clients' updates) went in."""

    held: object
    count: int = 0


def add_partial_mean(
    rule: Aggregator[Any], state: CenterState, partial: MeanState, sender: int = UNKNOWN_CLIENT
) -> CenterState:
    """A child's exact partial enters ``rule`` as its mean with its total weight.

    Raises:
        AggregationError: an empty partial.
    """
    if partial.total_weight <= 0:
        raise AggregationError(f"node {sender}: an empty partial has no mean")
    mean = (partial.weighted_sum / partial.total_weight).astype(np.float32)
    metrics = partial.metrics.means()
    state.held = rule.accumulate(
        state.held, mean, partial.total_weight, client_id=sender, metrics=metrics
    )
    state.count += 1
    return state


def add_partial_payload(
    rule: Aggregator[Any], state: CenterState, codec: Codec, payload: Payload,
    sent: MeanState, *, sender: int = UNKNOWN_CLIENT,
) -> CenterState:  # fmt: skip
    """A child's re-compressed mean (``payload``) enters ``rule`` with ``sent``'s weight.

    Raises:
        PayloadError: a malformed payload (``state`` is unchanged).
    """
    state.held = rule.accumulate_payload(
        state.held, codec, payload, sent.total_weight, client_id=sender,
        metrics=sent.metrics.means(),
    )  # fmt: skip
    state.count += 1
    return state


@final
class OverEdgeMeans:
    """An aggregator that runs ``rule`` at a center over its children's partials.

    Its ``merge`` takes a child's partial :class:`MeanState` (what a center's intake
    merges for an aggregator tier) and adds its mean; ``accumulate`` passes a client's
    own update to ``rule``. It is ``mergeable`` in that it takes partials; it never
    sends one up.
    """

    def __init__(self, rule: Aggregator[Any]) -> None:
        self.rule = rule

    @property
    def mergeable(self) -> bool:
        return True

    def init(self, size: int) -> CenterState:
        return CenterState(self.rule.init(size))

    def accumulate(
        self, state: CenterState, vector: FloatVector, weight: float, *,
        client_id: int = UNKNOWN_CLIENT, metrics: Mapping[str, float] | None = None,
    ) -> CenterState:  # fmt: skip
        state.held = self.rule.accumulate(
            state.held, vector, weight, client_id=client_id, metrics=metrics
        )
        state.count += 1
        return state

    def accumulate_payload(
        self, state: CenterState, codec: Codec, payload: Payload, weight: float, *,
        client_id: int = UNKNOWN_CLIENT, metrics: Mapping[str, float] | None = None,
    ) -> CenterState:  # fmt: skip
        state.held = self.rule.accumulate_payload(
            state.held, codec, payload, weight, client_id=client_id, metrics=metrics
        )
        state.count += 1
        return state

    def merge(self, a: CenterState, b: object) -> CenterState:
        """Add a child's partial ``b`` (a :class:`MeanState`).

        Raises:
            AggregationError: ``b`` is not a partial mean, or is empty.
        """
        if not isinstance(b, MeanState):
            raise AggregationError(f"the center's rule merges partial means, not {type(b)}")
        return add_partial_mean(self.rule, a, b)

    def merge_payload(
        self, state: CenterState, codec: Codec, payload: Payload, sent: MeanState, *,
        sender: int = UNKNOWN_CLIENT,
    ) -> CenterState:  # fmt: skip
        """Add a child's re-compressed partial mean (``payload``, decoded by ``codec``)
        with ``sent``'s weight, as the simulator's center does
        (:func:`add_partial_payload`).

        Raises:
            PayloadError: a malformed payload (``state`` is unchanged).
        """
        return add_partial_payload(self.rule, state, codec, payload, sent, sender=sender)

    def finalize(self, state: CenterState) -> FloatVector:
        return self.rule.finalize(state.held)

    def finalize_metrics(self, state: CenterState) -> dict[str, float]:
        return self.rule.finalize_metrics(state.held)
