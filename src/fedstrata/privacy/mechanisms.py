"""Noise mechanisms as pipeline stages: central, distributed (integer) and local Gaussian.

All three add noise of standard deviation ``noise_multiplier * clip_norm`` to the SUM
of clipped client updates (for local DP: to each update), so all three need a
``"clip"`` stage earlier in the pipeline (``requires_before``).

* :class:`CentralGaussian` — the server is trusted with the raw sum and adds the noise
  after aggregation (DP-FedAvg: McMahan, Ramage, Talwar, Zhang, "Learning
  Differentially Private Recurrent Language Models", ICLR 2018).
* :class:`DistributedDiscreteGaussian` / :class:`DistributedSkellam` — each of ``n``
  clients adds an integer share so that the shares sum to the target variance;
  with secure aggregation the server only ever sees the noisy sum (Kairouz, Liu,
  Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
  Secure Aggregation", ICML 2021; Agarwal, Kairouz, Liu, NeurIPS 2021 for Skellam).
* :class:`LocalGaussian` — each client noises its own update; nobody is trusted.

How the center calls :class:`CentralGaussian` (exactly this order)::

    total = np.zeros(spec.size)                       # float64 running sum
    for payload in accepted: codec.accumulate(payload, total, weight=1.0)
    central.add_noise(total, round_ctx, noise_multiplier=allocator.noise_multiplier(r))
    mean = total / expected_cohort_size               # q * N for Poisson sampling
    update = pipeline.decode_aggregate(mean.astype(np.float32), round_ctx)

Sum with weight 1.0 (weighting by example counts breaks the ``clip_norm``
sensitivity bound), and divide by the fixed expected cohort size rather than by the
realised count (Poisson sampling: the count itself is private). ``decode`` raises
:class:`~fedstrata.errors.PipelineError` if ``add_noise`` was not called for that
round, so noise cannot be forgotten silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.context import ClientContext, RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.errors import ConfigError, PipelineError
from fedstrata.privacy.noise import IntArray, discrete_gaussian, skellam

__all__ = [
    "CentralGaussian",
    "DistributedDiscreteGaussian",
    "DistributedSkellam",
    "LocalGaussian",
]

_NEEDS_CLIP = frozenset({"clip"})
DP_RNG_STAGE = "dp"

SumArray = TypeVar("SumArray", NDArray[np.float32], NDArray[np.float64])


def _non_negative(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class CentralGaussian:
    """Server-side Gaussian noise of std ``noise_multiplier * clip_norm`` on the sum.

    ``noise_multiplier`` and ``clip_norm`` are defaults; a staged budget allocator or
    adaptive clipping overrides them per round in :meth:`add_noise`.
    """

    def __init__(self, noise_multiplier: float, clip_norm: float) -> None:
        """Raises: ConfigError: a parameter is negative, zero (clip) or not finite."""
        self.noise_multiplier = _non_negative("noise_multiplier", noise_multiplier)
        self.clip_norm = _positive("clip_norm", clip_norm)
        self._noised_round: int | None = None

    @property
    def name(self) -> str:
        return "central_dp"

    @property
    def requires_before(self) -> frozenset[str]:
        return _NEEDS_CLIP

    def encode(self, vector: FloatVector, ctx: ClientContext) -> FloatVector:
        """Identity: central noise has no client half."""
        return vector

    def add_noise(
        self,
        aggregate_sum: SumArray,
        ctx: RoundContext,
        *,
        noise_multiplier: float | None = None,
        clip_norm: float | None = None,
    ) -> SumArray:
        """Add ``N(0, (noise_multiplier * clip_norm)^2)`` in place to the summed updates.

        Draws from ``ctx.rng("dp")``, so a run is reproducible from its root seed.

        Args:
            aggregate_sum: unweighted sum of the clipped updates (float32 or float64).
            ctx: the round being aggregated.
            noise_multiplier: this round's multiplier (default: the constructor's).
            clip_norm: this round's clip norm (default: the constructor's).

        Returns:
            ``aggregate_sum``, noised in place.

        Raises:
            ConfigError: an override is out of range.
        """
        sigma = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        norm = self.clip_norm if clip_norm is None else clip_norm
        std = _non_negative("noise_multiplier", sigma) * _positive("clip_norm", norm)
        rng = ctx.rng(DP_RNG_STAGE)
        aggregate_sum += rng.standard_normal(aggregate_sum.shape, dtype=aggregate_sum.dtype) * std
        self._noised_round = ctx.round_idx
        return aggregate_sum

    def decode(self, aggregate: FloatVector, ctx: RoundContext) -> FloatVector:
        """Checks that :meth:`add_noise` ran for this round; returns the aggregate.

        Raises:
            PipelineError: the aggregator did not call :meth:`add_noise` for this round.
        """
        if self._noised_round != ctx.round_idx:
            raise PipelineError(
                f"central DP noise was not added in round {ctx.round_idx}: the center must "
                "call CentralGaussian.add_noise(sum, round_ctx) on the unweighted sum before "
                "dividing by the cohort size"
            )
        return aggregate


class LocalGaussian:
    """Client-side Gaussian noise of std ``noise_multiplier * clip_norm`` on each update.

    Local DP: the guarantee holds against the server and every other party. The
    accountant should record these rounds with ``sampling_rate=1.0`` (the server knows
    who participated, so sampling gives no amplification against it).
    """

    def __init__(self, noise_multiplier: float, clip_norm: float) -> None:
        """Raises: ConfigError: a parameter is negative, zero (clip) or not finite."""
        self.noise_multiplier = _non_negative("noise_multiplier", noise_multiplier)
        self.clip_norm = _positive("clip_norm", clip_norm)

    @property
    def name(self) -> str:
        return "local_dp"

    @property
    def requires_before(self) -> frozenset[str]:
        return _NEEDS_CLIP

    def encode(self, vector: FloatVector, ctx: ClientContext) -> FloatVector:
        """Add the noise in place (float32) from ``ctx.rng("local_dp")``."""
        std = np.float32(self.noise_multiplier * self.clip_norm)
        vector += ctx.rng(self.name).standard_normal(vector.shape, dtype=np.float32) * std
        return vector

    def decode(self, aggregate: FloatVector, ctx: RoundContext) -> FloatVector:
        """Identity."""
        return aggregate


def _skellam_with_std(size: int, std: float, rng: np.random.Generator) -> IntArray:
    return skellam(size, std * std / 2.0, rng)


class _DistributedInteger:
    """Shared shell: integer noise shares on the grid ``1/scale`` (see subclasses)."""

    def __init__(
        self,
        noise_multiplier: float,
        clip_norm: float,
        num_clients: int,
        scale: float,
        sampler: Callable[[int, float, np.random.Generator], IntArray],
    ) -> None:
        self._sampler = sampler
        self.noise_multiplier = _positive("noise_multiplier", noise_multiplier)
        self.clip_norm = _positive("clip_norm", clip_norm)
        if num_clients < 1:
            raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
        self.num_clients = int(num_clients)
        self.scale = _positive("scale", scale)
        if self.share_sigma < 1.0:
            least = math.sqrt(num_clients) / (noise_multiplier * clip_norm)
            raise ConfigError(
                f"per-client noise std in integer units is {self.share_sigma:.3g} < 1; "
                f"raise scale to at least {least:.3g}"
                " (integer noise below one grid step under-delivers its variance)"
            )

    @property
    def name(self) -> str:
        return "distributed_dp"

    @property
    def requires_before(self) -> frozenset[str]:
        return _NEEDS_CLIP

    @property
    def share_sigma(self) -> float:
        """Per-client noise std in integer (grid) units: ``σ C scale / sqrt(n)``."""
        return self.noise_multiplier * self.clip_norm * self.scale / math.sqrt(self.num_clients)

    def noise_share(self, size: int, rng: np.random.Generator) -> IntArray:
        """This client's integer share (``size`` draws, std ``share_sigma``)."""
        return self._sampler(size, self.share_sigma, rng)

    def encode(self, vector: FloatVector, ctx: ClientContext) -> FloatVector:
        """Add this client's share, in real units (``share / scale``), in place.

        For the simulator without secure aggregation. With secure aggregation, call
        :meth:`noise_share` and add it to the client's integer vector on the ring.
        """
        share = self.noise_share(vector.shape[0], ctx.rng(self.name))
        vector += (share / self.scale).astype(np.float32)
        return vector

    def decode(self, aggregate: FloatVector, ctx: RoundContext) -> FloatVector:
        """Identity: the noise is already in the sum."""
        return aggregate


class DistributedDiscreteGaussian(_DistributedInteger):
    """Each client adds ``N_Z(0, share_sigma^2)``; ``n`` shares sum to std ``σ C`` (real units).

    Args:
        noise_multiplier: target noise multiplier of the summed noise.
        clip_norm: the L2 clip norm of the updates.
        num_clients: how many shares reach the sum. With dropouts, use the minimum
            number of survivors secure aggregation guarantees (its threshold): fewer
            shares means less noise than accounted.
        scale: integer grid: a real value ``x`` is sent as ``round(x * scale)``.

    The sum of ``n`` discrete Gaussians is not exactly a discrete Gaussian; Kairouz et
    al. (2021, Thm. 1) bound the gap by ``τ = 10 Σ_{k<n} exp(-2π² share_sigma² k/(k+1))``,
    below 1e-8 for ``share_sigma >= 1`` (enforced). The accountant treats the sum as a
    Gaussian of multiplier ``noise_multiplier``.

    Raises:
        ConfigError: a parameter is out of range, or ``share_sigma < 1``.
    """

    def __init__(
        self, noise_multiplier: float, clip_norm: float, num_clients: int, scale: float = 1.0
    ) -> None:
        super().__init__(noise_multiplier, clip_norm, num_clients, scale, discrete_gaussian)


class DistributedSkellam(_DistributedInteger):
    """Each client adds ``Skellam(μ, μ)`` with ``2μ = share_sigma²``; shares sum exactly
    to ``Skellam(nμ, nμ)`` of variance ``(σ C scale)²`` in integer units.

    Same arguments as :class:`DistributedDiscreteGaussian`. The accountant treats the
    sum as a Gaussian of multiplier ``noise_multiplier``; Agarwal et al. (2021) show
    the Skellam RDP approaches the Gaussian's as ``μ`` grows.

    Raises:
        ConfigError: a parameter is out of range, or ``share_sigma < 1``.
    """

    def __init__(
        self, noise_multiplier: float, clip_norm: float, num_clients: int, scale: float = 1.0
    ) -> None:
        super().__init__(noise_multiplier, clip_norm, num_clients, scale, _skellam_with_std)
