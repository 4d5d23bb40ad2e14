"""A weighted-mean partial re-compressed for the hop up a tier, written once.

An edge (or region) sends its partial's *mean* ``weighted_sum / total_weight`` through
a codec (a compression chain with its own error feedback keyed by the sending node)
together with the partial's weight, count and metric sums; the parent decodes the mean
straight into its running sum with that weight. The simulator's tree
(:class:`fedstrata.sim.tree_node.MeanTier`) and the runtime's aggregator tiers
(:mod:`fedstrata.runtime.partials`) both call these two functions.
"""

from __future__ import annotations

import numpy as np

from fedstrata.aggregation.mean import MeanState, WeightedMean
from fedstrata.core.context import ClientContext
from fedstrata.core.payload import Payload
from fedstrata.errors import AggregationError
from fedstrata.pipeline.stage import Codec

__all__ = ["encode_partial_mean", "merge_partial_mean"]

_MEAN = WeightedMean()


def encode_partial_mean(partial: MeanState, codec: Codec, ctx: ClientContext) -> Payload:
    """The mean of ``partial`` (float32) encoded by ``codec`` for the hop up.

    Raises:
        AggregationError: an empty partial (no weight).
    """
    if partial.total_weight <= 0:
        raise AggregationError("an empty partial has no mean to send up")
    mean = (partial.weighted_sum / partial.total_weight).astype(np.float32)
    return codec.encode(mean, ctx)


def merge_partial_mean(
    state: MeanState, codec: Codec, payload: Payload, sent: MeanState, *, sender: int = -1
) -> MeanState:
    """Merge a child's re-compressed partial: its decoded mean with weight
    ``sent.total_weight`` into the sum, its count and metric sums as they are
    (``sent.weighted_sum`` is not read).

    Raises:
        PayloadError: a malformed payload (``state`` is unchanged).
        ShapeError: a payload of another size (``state`` is unchanged).
        InvalidUpdateError: a bad weight.
    """
    _MEAN.accumulate_payload(state, codec, payload, sent.total_weight, client_id=sender)
    state.count += sent.count - 1
    state.metrics.merge(sent.metrics)
    return state
