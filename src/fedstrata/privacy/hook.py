"""Central differential privacy as a server-side round hook of the simulator.

Per round: refuse to start when the budget would be exceeded
(:class:`~fedstrata.errors.PrivacyBudgetExhausted`); turn the mean of the clipped,
uniformly weighted updates back into their sum, add Gaussian noise of std
``sigma_r * C`` (``sigma_r`` from the budget allocator's stage), divide by the
*expected* cohort size ``q * N`` (McMahan et al., ICLR 2018, "DP-FedAvg"); record the
round in the accountant and report ε spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.errors import ConfigError
from fedstrata.privacy.allocator import BudgetAllocator
from fedstrata.privacy.mechanisms import CentralGaussian

__all__ = ["CentralDPHook"]


@dataclass(eq=False)
class CentralDPHook:
    """Central DP for a simulation (see the module docstring).

    Attributes:
        allocator: the staged budget allocator (owns the accountant).
        mechanism: the Gaussian mechanism (its clip norm must match the clip stage).
        expected_cohort: ``q * N``, the fixed denominator of the noisy mean.
    """

    allocator: BudgetAllocator
    mechanism: CentralGaussian
    expected_cohort: float

    def __post_init__(self) -> None:
        if not self.expected_cohort > 0:
            raise ConfigError(f"expected_cohort must be > 0, got {self.expected_cohort}")

    def start(self, round_idx: int) -> None:
        """Raises: PrivacyBudgetExhausted: this round would exceed the budget."""
        self.allocator.check_round(round_idx)

    def aggregate(self, mean: FloatVector, accepted: int, ctx: RoundContext) -> FloatVector:
        total = mean.astype(np.float64) * accepted
        sigma = self.allocator.noise_multiplier(ctx.round_idx)
        self.mechanism.add_noise(total, ctx, noise_multiplier=sigma)
        return (total / self.expected_cohort).astype(np.float32)

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> Mapping[str, float]:
        metrics = self.allocator.record(round_idx)
        if loss is not None and np.isfinite(loss):
            self.allocator.observe_progress(loss)
        return {
            "epsilon_spent": metrics.epsilon_spent,
            "epsilon_remaining": metrics.remaining_epsilon,
            "noise_multiplier": metrics.noise_multiplier,
            "dp_stage": float(metrics.stage),
        }
