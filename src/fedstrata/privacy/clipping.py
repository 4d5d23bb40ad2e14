"""Per-update L2 clipping: fixed, and adaptive quantile clipping.

Clipping bounds each client's contribution to the aggregate, which is what gives the
noise mechanisms (``fedstrata.privacy.mechanisms``) a known sensitivity: every DP
mechanism stage declares ``requires_before = {"clip"}``. Both clipping stages are
named ``"clip"`` so either satisfies that requirement.

Adaptive clipping follows Andrew, Thakkar, McMahan, Ramaswamy, "Differentially
Private Learning with Adaptive Clipping", NeurIPS 2021 (Algorithm 1): each client
reports one bit ``b_i = [||Δ_i|| <= C]``; the server forms the noisy fraction
``b = (Σ b_i + N(0, σ_b^2)) / n`` and takes the geometric step
``C <- C * exp(-η (b - γ))`` toward the ``γ``-quantile of the update norms.

How the driver feeds :class:`AdaptiveClip` each round::

    clip.clip_norm                      # ship this round's norm to the cohort
    bit_i = clip.clip_bit(delta_i)      # client, on the UNCLIPPED update
    vec_i = clip.encode(delta_i, ctx_i) # client: clipped update
    ...                                 # server, after the round:
    frac = clip.noisy_bit_fraction(sum(bits), n, round_ctx.rng("clip_bits"))
    clip.update(frac)                   # norm for the next round

The bits cost privacy too. Andrew et al. (Thm. 1) show that clipped updates with
noise multiplier ``z_Δ`` plus bits with noise std ``σ_b`` are as private as one
Gaussian mechanism of multiplier ``z = (z_Δ^-2 + (2 σ_b)^-2)^-1/2``; record ``z`` in
the accountant and add noise with :func:`update_noise_multiplier` ``(z, σ_b)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedstrata.core.context import ClientContext, RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.errors import ConfigError

__all__ = [
    "AdaptiveClip",
    "AdaptiveClipState",
    "FixedClip",
    "adaptive_clip_step",
    "clip_l2",
    "l2_norm",
    "update_noise_multiplier",
]

CLIP_STAGE = "clip"


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def l2_norm(vector: FloatVector) -> float:
    """L2 norm of a flat vector, accumulated in float64 (float32 BLAS dot drifts ~1e-4)."""
    return math.sqrt(float(np.einsum("i,i->", vector, vector, dtype=np.float64)))


def clip_l2(vector: FloatVector, clip_norm: float) -> FloatVector:
    """Scale ``vector`` in place so that its L2 norm is at most ``clip_norm``.

    Vectors already inside the ball are returned untouched (bit for bit).

    Raises:
        ConfigError: ``clip_norm`` is not a finite positive number.
    """
    _positive("clip_norm", clip_norm)
    norm = l2_norm(vector)
    if norm > clip_norm:
        vector *= np.float32(clip_norm / norm)
        # float32 rounding can leave the norm a hair above the bound; pull it inside.
        over = l2_norm(vector)
        if over > clip_norm:
            vector *= np.float32(np.nextafter(np.float32(clip_norm / over), np.float32(0)))
    return vector


def adaptive_clip_step(
    clip_norm: float, bit_fraction: float, target_quantile: float, lr: float
) -> float:
    """One geometric update ``C * exp(-lr * (bit_fraction - target_quantile))``.

    ``bit_fraction`` is the (noisy) fraction of clients whose update norm was at most
    ``clip_norm``; more than the target quantile shrinks the norm, fewer grows it.
    """
    return clip_norm * math.exp(-lr * (bit_fraction - target_quantile))


def update_noise_multiplier(noise_multiplier: float, count_noise_std: float) -> float:
    """Noise multiplier for the updates so that updates + bits compose to ``noise_multiplier``.

    Andrew et al. 2021, Theorem 1: ``z_Δ = (z^-2 - (2 σ_b)^-2)^-1/2``.

    Raises:
        ConfigError: ``count_noise_std`` is too small to leave any budget for the
            updates (``2 σ_b <= z``), or an argument is not positive.
    """
    _positive("noise_multiplier", noise_multiplier)
    _positive("count_noise_std", count_noise_std)
    rest = noise_multiplier**-2 - (2.0 * count_noise_std) ** -2
    if rest <= 0:
        raise ConfigError(
            f"count_noise_std={count_noise_std} must exceed noise_multiplier/2="
            f"{noise_multiplier / 2} so that the clipping bits leave budget for the updates"
        )
    return 1.0 / math.sqrt(rest)


class FixedClip:
    """Pipeline stage: clip each client's flat update to L2 norm ``clip_norm``."""

    def __init__(self, clip_norm: float) -> None:
        """Raises: ConfigError: ``clip_norm`` is not a finite positive number."""
        _positive("clip_norm", clip_norm)
        self.clip_norm = float(clip_norm)

    @property
    def name(self) -> str:
        return CLIP_STAGE

    @property
    def requires_before(self) -> frozenset[str]:
        return frozenset()

    def encode(self, vector: FloatVector, ctx: ClientContext) -> FloatVector:
        """Clip in place and return the vector."""
        return clip_l2(vector, self.clip_norm)

    def decode(self, aggregate: FloatVector, ctx: RoundContext) -> FloatVector:
        """Identity: clipping has no server half."""
        return aggregate


@dataclass(frozen=True)
class AdaptiveClipState:
    """Everything :class:`AdaptiveClip` carries across rounds (checkpoint this).

    Attributes:
        clip_norm: the current clipping norm.
        rounds_updated: how many server updates have been applied.
    """

    clip_norm: float
    rounds_updated: int = 0

    def __post_init__(self) -> None:
        _positive("AdaptiveClipState.clip_norm", self.clip_norm)
        if self.rounds_updated < 0:
            raise ConfigError(
                f"AdaptiveClipState.rounds_updated must be >= 0, got {self.rounds_updated}"
            )


class AdaptiveClip:
    """Pipeline stage: clip to a norm that tracks a quantile of the update norms.

    Andrew et al., NeurIPS 2021. See the module docstring for the driver protocol.
    """

    def __init__(
        self,
        initial_norm: float,
        target_quantile: float = 0.5,
        lr: float = 0.2,
        count_noise_std: float = 0.0,
    ) -> None:
        """Raises: ConfigError: a parameter is out of range (named in the message)."""
        _positive("initial_norm", initial_norm)
        if not 0.0 < target_quantile < 1.0:
            raise ConfigError(f"target_quantile must be in (0, 1), got {target_quantile!r}")
        _positive("lr", lr)
        if not (math.isfinite(count_noise_std) and count_noise_std >= 0):
            raise ConfigError(f"count_noise_std must be finite and >= 0, got {count_noise_std!r}")
        self.target_quantile = float(target_quantile)
        self.lr = float(lr)
        self.count_noise_std = float(count_noise_std)
        self._state = AdaptiveClipState(float(initial_norm))

    @property
    def name(self) -> str:
        return CLIP_STAGE

    @property
    def requires_before(self) -> frozenset[str]:
        return frozenset()

    @property
    def clip_norm(self) -> float:
        """The norm clients clip to in the current round."""
        return self._state.clip_norm

    @property
    def state(self) -> AdaptiveClipState:
        return self._state

    def load_state(self, state: AdaptiveClipState) -> None:
        """Restore from a checkpoint, or push the server's norm into a worker's copy."""
        self._state = state

    def clip_bit(self, vector: FloatVector) -> int:
        """The client's report: 1 if the UNCLIPPED update's norm is <= the current norm."""
        return int(l2_norm(vector) <= self._state.clip_norm)

    def encode(self, vector: FloatVector, ctx: ClientContext) -> FloatVector:
        """Clip in place to the current norm and return the vector."""
        return clip_l2(vector, self._state.clip_norm)

    def decode(self, aggregate: FloatVector, ctx: RoundContext) -> FloatVector:
        """Identity: the norm update is driven by :meth:`update`."""
        return aggregate

    def noisy_bit_fraction(
        self, bit_sum: int, cohort_size: int, rng: np.random.Generator
    ) -> float:
        """``(bit_sum + N(0, count_noise_std^2)) / cohort_size``.

        Raises:
            ConfigError: ``cohort_size < 1`` or ``bit_sum`` outside ``[0, cohort_size]``.
        """
        if cohort_size < 1:
            raise ConfigError(f"cohort_size must be >= 1, got {cohort_size}")
        if not 0 <= bit_sum <= cohort_size:
            raise ConfigError(f"bit_sum must be in [0, cohort_size={cohort_size}], got {bit_sum}")
        noise = float(rng.normal(0.0, self.count_noise_std)) if self.count_noise_std else 0.0
        return (bit_sum + noise) / cohort_size

    def update(self, bit_fraction: float) -> float:
        """Server step: move the norm toward the target quantile; returns the new norm.

        Raises:
            ConfigError: ``bit_fraction`` is not finite.
        """
        if not math.isfinite(bit_fraction):
            raise ConfigError(f"bit_fraction must be finite, got {bit_fraction!r}")
        norm = adaptive_clip_step(
            self._state.clip_norm, bit_fraction, self.target_quantile, self.lr
        )
        self._state = AdaptiveClipState(norm, self._state.rounds_updated + 1)
        return norm
