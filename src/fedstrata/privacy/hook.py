"""Central differential privacy as a server-side round hook of the simulator.

Per round: refuse to start when the budget would be exceeded
(:class:`~fedstrata.errors.PrivacyBudgetExhausted`); turn the mean of the clipped,
uniformly weighted updates back into their sum, add Gaussian noise of std
``sigma_r * C`` (``sigma_r`` from the budget allocator's stage), divide by the
*expected* cohort size ``q * N`` (McMahan et al., ICLR 2018, "DP-FedAvg"); record the
round in the accountant and report ε spent, σ and the round's sampling rate ``q``
(so ε can be recomputed from the run store alone).

Under a lossy wire codec the sensitivity stays ``C``: the pipeline's
:class:`~fedstrata.aggregation.clipped.ClipDecoded` clips every decoded update to
``C`` on the server before it is folded, and this hook reports those norms
(``dp_server_clipped``, ``dp_decoded_norm_max``, ``dp_folded_norm_max``).

Every round is noised and applied, also one with fewer than ``rounds.min_clients``
accepted updates (none: the noise alone): skipping the update would reveal that the
cohort was small, which the accountant does not cover.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedstrata.aggregation.clipped import ClipDecoded
from fedstrata.core.context import RoundContext
from fedstrata.core.metrics import PrivacySpent
from fedstrata.core.params import FloatVector
from fedstrata.core.statepart import StatePart
from fedstrata.errors import ConfigError
from fedstrata.privacy.adaptive_server import AdaptiveServerClip
from fedstrata.privacy.allocator import BudgetAllocator
from fedstrata.privacy.mechanisms import CentralGaussian

__all__ = ["NOISE_WARNING_RATIO", "CentralDPHook", "noise_to_signal"]

logger = logging.getLogger(__name__)

NOISE_WARNING_RATIO = 10.0
"""Warn before a run whose per-coordinate noise is this many times the signal."""


def noise_to_signal(noise_multiplier: float, expected_cohort: float, size: int) -> float:
    """Noise std per coordinate over the clipped mean update per coordinate, per round.

    The noisy mean gets noise of std ``σ C / (q N)`` per coordinate; a mean of
    updates clipped to ``C`` has norm at most ``C``, so at most ``C / sqrt(d)`` per
    coordinate (RMS). The ratio ``σ sqrt(d) / (q N)`` does not depend on ``C``.
    """
    return noise_multiplier * math.sqrt(size) / expected_cohort


@dataclass(eq=False)
class CentralDPHook:
    """Central DP for a simulation (see the module docstring).

    Attributes:
        allocator: the staged budget allocator (owns the accountant).
        mechanism: the Gaussian mechanism (its clip norm must match the clip stage).
        expected_cohort: ``q * N`` at the allocator's planned ``q``: the fixed
            denominator of the noisy mean.
        sampling_rate_of: the sampling rate of each round, for a driver whose
            population changes (``None``: the allocator's planned ``q`` every
            round); the denominator then is ``q_r * N``.
        server_clip: the wire codec that clips each decoded update to the clip norm
            (a lossy codec under central DP); its norms are reported each round.
        adaptive: adaptive clipping (``privacy.adaptive_clip``): the server clip's
            norm follows a quantile of the update norms and sets the noise scale.
    """

    allocator: BudgetAllocator
    mechanism: CentralGaussian
    expected_cohort: float
    sampling_rate_of: Callable[[int], float] | None = None
    server_clip: ClipDecoded | None = None
    adaptive: AdaptiveServerClip | None = None

    def __post_init__(self) -> None:
        if not self.expected_cohort > 0:
            raise ConfigError(f"expected_cohort must be > 0, got {self.expected_cohort}")
        self._clip_used = self.mechanism.clip_norm

    @property
    def applies_every_round(self) -> bool:
        """Always: a round below ``min_clients`` is noised and applied too."""
        return True

    def check_noise(self, size: int) -> float:
        """Log a WARNING before the run when the noise dwarfs the signal; returns the ratio.

        The ratio is :func:`noise_to_signal` at the least noisy stage of the plan,
        for a model of ``size`` parameters.
        """
        sigma = min(p.noise_multiplier for p in self.allocator.plan)
        ratio = noise_to_signal(sigma, self.expected_cohort, size)
        if ratio >= NOISE_WARNING_RATIO:
            rounds = self.allocator.planned_rounds
            clip = self.mechanism.clip_norm
            logger.warning(
                "central DP: the noise std per coordinate (sigma*C/(qN) = %.3g*%.3g/%.3g = "
                "%.3g) is %.0fx the largest clipped mean update per coordinate (C/sqrt(d) "
                "= %.3g for %s parameters); averaged over the %d planned rounds it is "
                "%.1fx, so expect accuracy well below a non-private run. The ratio "
                "sigma*sqrt(d)/(qN) does not depend on the clip norm; lower it with a "
                "larger population (more clients at the same sampling rate), a larger "
                "privacy.epsilon or a smaller model. A small privacy.clip_norm or "
                "server.lr keeps training stable by averaging the noise over more rounds. "
                "Safe to ignore for a demo of the mechanics",
                sigma, clip, self.expected_cohort, sigma * clip / self.expected_cohort,
                ratio, clip / math.sqrt(size), f"{size:,}", rounds, ratio / math.sqrt(rounds),
            )  # fmt: skip
        return ratio

    def _rate(self, round_idx: int) -> float:
        planned = self.allocator.sampling_rate
        return planned if self.sampling_rate_of is None else self.sampling_rate_of(round_idx)

    def state_dict(self) -> StatePart:
        """The allocator's (and its accountant's) state: ε spent survives a resume."""
        return self.allocator.state_dict()

    def load_state_dict(self, part: StatePart) -> None:
        """Raises: CheckpointCorrupt: the part is not this allocator's state."""
        self.allocator.load_state_dict(part)

    def start(self, round_idx: int) -> None:
        """Raises: PrivacyBudgetExhausted: this round would exceed the budget."""
        self.allocator.check_round(round_idx, self._rate(round_idx))

    def aggregate(self, mean: FloatVector, accepted: int, ctx: RoundContext) -> FloatVector:
        total = mean.astype(np.float64) * accepted
        sigma = self.allocator.noise_multiplier(ctx.round_idx)
        if self.adaptive is None:
            self.mechanism.add_noise(total, ctx, noise_multiplier=sigma)
        else:  # Andrew et al. Thm. 1: updates at z_Δ C_t plus the count compose to sigma
            clip = self.adaptive.clip_norm
            z_delta = self.adaptive.noise_multiplier(sigma)
            self.mechanism.add_noise(total, ctx, noise_multiplier=z_delta, clip_norm=clip)
            self._clip_used = clip
            self.adaptive.step(ctx)
        cohort = self.expected_cohort * self._rate(ctx.round_idx) / self.allocator.sampling_rate
        return (total / cohort).astype(np.float32)

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> PrivacySpent:
        rate = self._rate(round_idx)
        metrics = self.allocator.record(round_idx, rate)
        if loss is not None and np.isfinite(loss):
            self.allocator.observe_progress(loss)
        clip = None if self.server_clip is None else self.server_clip.take_stats()
        return PrivacySpent(
            epsilon_spent=metrics.epsilon_spent,
            epsilon_remaining=metrics.remaining_epsilon,
            noise_multiplier=metrics.noise_multiplier,
            sampling_rate=rate,
            stage=metrics.stage,
            server_clipped=None if clip is None else clip.clipped,
            decoded_norm_max=None if clip is None else clip.decoded_norm_max,
            folded_norm_max=None if clip is None else clip.folded_norm_max,
            clip_norm=None if self.adaptive is None else self._clip_used,
        )
