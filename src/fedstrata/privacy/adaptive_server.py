"""Adaptive clipping at the central-DP server (Andrew et al., NeurIPS 2021, Algorithm 1).

Under central DP the server is trusted with each decoded update, so the adaptive clip
runs there: :class:`~fedstrata.aggregation.clipped.ClipDecoded` clips every decoded
update to this round's norm ``C_t`` before it is folded (the clients clip only to the
ceiling ``clip_norm_max``), and counts the updates it did not have to clip. That count
is the sum of Andrew et al.'s bits ``b_i = [||Δ_i|| <= C_t]`` (an update the clients'
ceiling shortened is longer than ``C_t`` too, since ``C_t`` never exceeds the ceiling).

Per round, in this order (:meth:`AdaptiveServerClip.noise` then :meth:`step`):

1. the sum of the clipped updates gets Gaussian noise of std ``z_Δ C_t`` with
   ``z_Δ = (z^-2 - (2 σ_b)^-2)^-1/2`` (``clipping.update_noise_multiplier``),
   where ``z`` is the noise multiplier the budget allocator calibrated and records;
2. the count gets ``N(0, σ_b^2)``, is divided by the expected cohort ``q N``, and the
   norm takes the geometric step ``C <- C exp(-η (b̃ - γ))``, capped at the ceiling.

Andrew et al. (Theorem 1) show that the two releases together are exactly as private
as one Gaussian sum query of multiplier ``z``: the accountant's ε is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedstrata.aggregation.clipped import ClipDecoded
from fedstrata.core.context import RoundContext
from fedstrata.errors import ConfigError
from fedstrata.privacy.clipping import AdaptiveClip, AdaptiveClipState, update_noise_multiplier

__all__ = [
    "CLIP_BITS_RNG_STAGE",
    "COUNT_NOISE_FACTOR",
    "AdaptiveServerClip",
    "default_count_noise",
]

CLIP_BITS_RNG_STAGE = "clip_bits"


COUNT_NOISE_FACTOR = 2.5
"""The default count noise is at least this times the largest planned ``z``: then
``z_Δ <= z / sqrt(1 - 1/25)``, about 2% more noise on the updates."""


def default_count_noise(expected_cohort: float, max_noise_multiplier: float) -> float:
    """The count's noise std: Andrew et al.'s ``q N / 20``, or ``2.5 z`` if larger (a
    small cohort, where ``q N / 20`` would leave no budget for the updates)."""
    return max(expected_cohort / 20.0, COUNT_NOISE_FACTOR * max_noise_multiplier)


@dataclass(eq=False)
class AdaptiveServerClip:
    """The server half of adaptive clipping; see the module docstring.

    Attributes:
        clip: the norm's state and geometric step (its ``count_noise_std`` is ``σ_b``).
        server_clip: the codec that clips each decoded update to the current norm.
        expected_cohort: ``q N``, the denominator of the noisy fraction.
        max_norm: the ceiling (the clients' own clip norm).
    """

    clip: AdaptiveClip
    server_clip: ClipDecoded
    expected_cohort: float
    max_norm: float

    def __post_init__(self) -> None:
        if not self.clip.count_noise_std > 0:
            raise ConfigError("adaptive clipping under central DP needs count noise std > 0")
        if not self.expected_cohort > 0:
            raise ConfigError(f"expected_cohort must be > 0, got {self.expected_cohort}")
        if self.clip.clip_norm > self.max_norm:
            raise ConfigError(
                f"the initial clip norm {self.clip.clip_norm} exceeds the ceiling {self.max_norm}"
            )
        self.server_clip.clip_norm = self.clip.clip_norm

    @property
    def clip_norm(self) -> float:
        """This round's clip norm ``C_t`` (the sensitivity of the sum)."""
        return self.clip.clip_norm

    def noise_multiplier(self, accounted: float) -> float:
        """``z_Δ`` for the updates so that updates and count compose to ``accounted``.

        Raises:
            ConfigError: the count's noise is too small to leave budget for the updates.
        """
        return update_noise_multiplier(accounted, self.clip.count_noise_std)

    def step(self, ctx: RoundContext) -> float:
        """Noise this round's count of unclipped updates and move the norm; returns it.

        Reads the server clip's counters of the round (before the DP hook takes them).
        """
        stats = self.server_clip.stats
        unclipped = stats.decoded - stats.clipped
        noise = float(ctx.rng(CLIP_BITS_RNG_STAGE).normal(0.0, self.clip.count_noise_std))
        new = min(self.clip.update((unclipped + noise) / self.expected_cohort), self.max_norm)
        self.clip.load_state(AdaptiveClipState(new, self.clip.state.rounds_updated))
        self.server_clip.clip_norm = new
        return new
