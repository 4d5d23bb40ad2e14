"""The server's round hooks and the publisher of a new model: what a round's server
step calls besides the aggregator and the server optimizer (every driver's step is
:func:`fedstrata.coordinator.round_logic.server_step`)."""

from __future__ import annotations

from typing import Protocol

from fedstrata.core.context import RoundContext
from fedstrata.core.metrics import AnyStats
from fedstrata.core.params import FloatVector

__all__ = ["Publisher", "RoundHook"]


class RoundHook(Protocol):
    """Server-side participant in every round.

    The privacy budget allocator uses it to refuse a round that would overspend, to
    add central noise to the aggregate and to report the budget spent; secure
    aggregation to report the protocol's costs.
    """

    @property
    def applies_every_round(self) -> bool:
        """Whether the round's aggregate is applied even when fewer than
        ``rounds.min_clients`` updates were accepted (a zero sum when none): central
        DP, where skipping the update would reveal that the cohort was small."""
        ...

    def start(self, round_idx: int) -> None:
        """Called before a round; raise ``PrivacyBudgetExhausted`` to stop training."""
        ...

    def aggregate(self, mean: FloatVector, accepted: int, ctx: RoundContext) -> FloatVector:
        """Transform the round's aggregate (``accepted`` updates) before the server step."""
        ...

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> AnyStats | None:
        """After the server step and evaluation (``loss``: test loss or None).

        Returns the hook's typed record (:mod:`fedstrata.core.metrics`), which the
        round places into its family's ``RoundMetrics`` field, or None.
        """
        ...


class Publisher(Protocol):
    """Told of every new model the server step makes (the simulator's broadcaster
    prepares the clients' next download from it)."""

    def publish(self, params: FloatVector, ctx: RoundContext) -> None:
        """The server has a new model."""
        ...
