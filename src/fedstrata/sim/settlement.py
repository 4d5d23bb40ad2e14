"""Weight partial work by the fraction of the assignment a device completed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedstrata.aggregation.protocol import UNKNOWN_CLIENT, Aggregator
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.pipeline.stage import Codec

if TYPE_CHECKING:
    from fedstrata.scheduling.planner import WorkPlanner

__all__ = ["SettlementWeighted"]


class SettlementWeighted:
    """An aggregator whose client weights are scaled by the work each client completed.

    Partial work at the deadline counts with ``weight * done / assigned``
    (:func:`fedstrata.scheduling.settlement_weights`); everything else is ``inner``'s.
    """

    def __init__(self, inner: Aggregator[Any], planner: WorkPlanner) -> None:
        self.inner, self.planner = inner, planner

    @property
    def mergeable(self) -> bool:
        return bool(self.inner.mergeable)

    def init(self, size: int) -> object:
        return self.inner.init(size)

    def accumulate(
        self,
        state: object,
        vector: FloatVector,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> object:
        w = weight * self.planner.weight_factor(client_id)
        return self.inner.accumulate(state, vector, w, client_id=client_id, metrics=metrics)

    def accumulate_payload(
        self,
        state: object,
        codec: Codec,
        payload: Payload,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> object:
        w = weight * self.planner.weight_factor(client_id)
        return self.inner.accumulate_payload(
            state, codec, payload, w, client_id=client_id, metrics=metrics
        )

    def merge(self, a: object, b: object) -> object:
        return self.inner.merge(a, b)

    def finalize(self, state: object) -> FloatVector:
        return self.inner.finalize(state)

    def finalize_metrics(self, state: object) -> dict[str, float]:
        return self.inner.finalize_metrics(state)
