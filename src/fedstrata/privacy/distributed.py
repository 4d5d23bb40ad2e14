"""Distributed DP through secure aggregation: per-round integer noise shares (Issue 12 part 4).

Each client adds an integer noise share to its ring vector *before masking*, so no
party ever sees an un-noised sum (Kairouz, Liu, Steinke, ICML 2021: the distributed
discrete Gaussian; Agarwal, Kairouz, Liu, NeurIPS 2021: Skellam). The server only
learns the masked sum, which carries the sum of the survivors' shares.

Calibration, per round ``r`` with the budget allocator's noise multiplier ``σ_r``:

* **Sensitivity in ring units.** A client L2-clips its update to ``C`` and the ring
  codec scales by ``s = L / clip`` and rounds each of the ``k`` sent coordinates
  (error below one step each), so one client's integer vector has L2 norm at most
  ``Δ = C s + sqrt(k)``. The accountant's events are Gaussian of multiplier
  ``σ_r`` relative to ``Δ``.
* **Shares and dropouts.** Each client's share has std ``σ_r Δ / sqrt(n_min)``
  where ``n_min`` is the least number of survivors the run accepts (the planned
  cohort less the planned dropouts). Survivors' shares add up to std at least
  ``σ_r Δ``; a round with fewer survivors is not unmasked at all
  (``SecAggOptions.min_survivors``) and is still charged to the budget
  (conservative).
* **Tails.** Shares are truncated to ``±ceil(TAIL_STDS · share_std)`` so the ring's
  capacity is bounded; with ``TAIL_STDS = 20`` a draw is truncated with probability
  below ``1e-80`` per coordinate.
* **The sum of discrete Gaussians** is within ``τ < 1e-8`` of a discrete Gaussian for
  share std >= 1 (Kairouz et al., Thm. 1; enforced); Skellam shares sum exactly to
  a Skellam. Both are accounted as the Gaussian of the same variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import ConfigError
from fedstrata.privacy.allocator import BudgetAllocator
from fedstrata.privacy.noise import discrete_gaussian, skellam

__all__ = ["TAIL_STDS", "NoiseKind", "NoiseShares", "noise_shares", "ring_sensitivity"]

TAIL_STDS = 20.0
"""Noise shares are truncated at this many standard deviations."""

NoiseKind = Literal["discrete_gaussian", "skellam"]


def ring_sensitivity(clip_norm: float, scale: float, count: int) -> float:
    """L2 sensitivity of one client's rounded ring vector: ``C s + sqrt(k)``."""
    return clip_norm * scale + math.sqrt(count)


@dataclass(frozen=True)
class NoiseShares:
    """Each client's integer noise share per round (picklable: travels to workers).

    Attributes:
        kind: discrete Gaussian or Skellam shares.
        share_stds: per round, the std of one client's share (ring units); rounds
            past the end use the last entry.
        bound: shares are truncated to ``[-bound, bound]``.
    """

    kind: NoiseKind
    share_stds: tuple[float, ...]
    bound: int

    def __post_init__(self) -> None:
        if not self.share_stds or min(self.share_stds) < 1.0:
            raise ConfigError(
                f"distributed DP noise shares need a std >= 1 ring step, got "
                f"{min(self.share_stds, default=0.0):.3g}; raise secagg.input_bits"
            )

    def std(self, round_idx: int) -> float:
        """Share std of ``round_idx``."""
        return self.share_stds[min(round_idx, len(self.share_stds) - 1)]

    def __call__(self, round_idx: int, count: int, rng: np.random.Generator) -> NDArray[np.int64]:
        """``count`` integer draws of round ``round_idx``'s share, truncated."""
        std = self.std(round_idx)
        draw = (
            discrete_gaussian(count, std, rng)
            if self.kind == "discrete_gaussian"
            else (skellam(count, std * std / 2.0, rng))
        )
        return np.clip(draw.astype(np.int64), -self.bound, self.bound)


def noise_shares(
    allocator: BudgetAllocator, sensitivity: float, min_survivors: int, kind: NoiseKind
) -> NoiseShares:
    """The shares that make ``min_survivors`` clients' noise std ``σ_r Δ`` every round.

    Args:
        allocator: the budget allocator; its plan fixes ``σ_r`` for every planned
            round (a plateau switch would change it after the clients drew).
        sensitivity: ``Δ`` in ring units (:func:`ring_sensitivity`).
        min_survivors: ``n_min``, the least survivors whose sum is unmasked.
        kind: the share distribution.

    Raises:
        ConfigError: ``min_survivors < 1``, or a share std below one ring step.
    """
    if min_survivors < 1:
        raise ConfigError(f"min_survivors must be >= 1, got {min_survivors}")
    stds = tuple(
        allocator.noise_multiplier(r) * sensitivity / math.sqrt(min_survivors)
        for r in range(allocator.planned_rounds)
    )
    return NoiseShares(kind, stds, math.ceil(TAIL_STDS * max(stds)))
