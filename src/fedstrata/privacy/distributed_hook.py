"""Distributed DP's server side as a simulator round hook (Issue 12 part 4).

The noise is already in the securely summed aggregate (each client added its share
in the ring, :mod:`fedstrata.privacy.distributed`); the hook only keeps the budget:
it refuses a round that would overspend
(:class:`~fedstrata.errors.PrivacyBudgetExhausted`, the run stops), records each
round in the accountant and reports ε spent, σ, the sampling rate and the share
std. Every started round is charged, also one whose sum was withheld for too few
survivors (conservative).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedstrata.core.context import RoundContext
from fedstrata.core.metrics import PrivacySpent
from fedstrata.core.params import FloatVector
from fedstrata.core.statepart import StatePart
from fedstrata.privacy.allocator import BudgetAllocator
from fedstrata.privacy.distributed import NoiseShares

__all__ = ["DistributedDPHook"]


@dataclass(eq=False)
class DistributedDPHook:
    """Budget keeping for distributed DP (see the module docstring).

    Attributes:
        allocator: the budget allocator whose plan set the clients' shares.
        shares: the clients' noise shares (reported per round).
    """

    allocator: BudgetAllocator
    shares: NoiseShares

    @property
    def applies_every_round(self) -> bool:
        """No: the noise is in the sum, nothing is added at the server."""
        return False

    def state_dict(self) -> StatePart:
        """The allocator's (and its accountant's) state: ε spent survives a resume."""
        return self.allocator.state_dict()

    def load_state_dict(self, part: StatePart) -> None:
        """Raises: CheckpointCorrupt: the part is not this allocator's state."""
        self.allocator.load_state_dict(part)

    def start(self, round_idx: int) -> None:
        """Raises: PrivacyBudgetExhausted: this round would exceed the budget."""
        self.allocator.check_round(round_idx)

    def aggregate(self, mean: FloatVector, accepted: int, ctx: RoundContext) -> FloatVector:
        """The securely summed, already noised mean, unchanged."""
        return mean

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> PrivacySpent:
        metrics = self.allocator.record(round_idx)
        return PrivacySpent(
            epsilon_spent=metrics.epsilon_spent,
            epsilon_remaining=metrics.remaining_epsilon,
            noise_multiplier=metrics.noise_multiplier,
            sampling_rate=self.allocator.sampling_rate,
            stage=metrics.stage,
            share_std=self.shares.std(round_idx),
        )
