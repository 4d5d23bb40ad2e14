"""Build the privacy budget allocator and distributed DP's parts from the config.

Issue 12 part 4: distributed DP's noise shares are planned from the same allocator
whose hook keeps the budget, so the clients' shares and the accountant agree.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fedstrata.config import FedConfig
from fedstrata.coordinator.hooks import RoundHook
from fedstrata.errors import ConfigError
from fedstrata.pipeline import Codec, Pipeline

if TYPE_CHECKING:
    from fedstrata.privacy import BudgetAllocator
    from fedstrata.privacy.distributed import NoiseShares
    from fedstrata.secagg import RingSpec

__all__ = [
    "distributed_allocator",
    "distributed_hook",
    "dp_allocator",
    "noise_shares_for",
    "ring_sensitivity_real",
    "sampling_rate",
]


def sampling_rate(config: FedConfig, num_clients: int) -> float:
    """Probability that a client takes part in a round."""
    per_round = config.rounds.clients_per_round or num_clients
    return min(1.0, per_round / num_clients)


def noise_shares_for(
    config: FedConfig, allocator: BudgetAllocator, spec: RingSpec, size: int, cohort: int
) -> tuple[NoiseShares, int]:
    """Distributed DP's noise shares and the least survivors they are planned for.

    Raises:
        ConfigError: a share std below one ring step (raise ``secagg.input_bits``).
    """
    from fedstrata.privacy.distributed import noise_shares, ring_sensitivity

    survivors = cohort - math.floor(config.secagg.dropout_rate * cohort)
    sensitivity = ring_sensitivity(config.privacy.clip_norm, spec.scale, spec.num_kept(size))
    return noise_shares(allocator, sensitivity, survivors, config.privacy.noise), survivors


def dp_allocator(
    config: FedConfig, num_clients: int, *, fixed_size: bool = False
) -> BudgetAllocator:
    """The privacy budget allocator of ``config.privacy`` (uniform or staged).

    ``fixed_size``: the cohort is ``clients_per_round`` of ``num_clients`` drawn
    without replacement (distributed DP under secure aggregation), else Poisson.
    """
    from fedstrata.privacy import (
        BudgetAllocator,
        PlateauSwitch,
        Sampling,
        SamplingKind,
        StageSpec,
    )

    p = config.privacy
    q = sampling_rate(config, num_clients)
    sampling = Sampling(SamplingKind.FIXED_SIZE, num_clients) if fixed_size else None
    planned = p.planned_rounds or config.rounds.rounds
    if p.schedule == "uniform":
        return BudgetAllocator.uniform(
            p.epsilon,
            p.delta,
            planned,
            q,
            accountant=_accountant(p.accountant, fixed_size),
            sampling=sampling,
        )
    fractions = p.stage_fractions or (1 / len(p.stage_weights),) * len(p.stage_weights)
    stages = [StageSpec(f, w) for f, w in zip(fractions, p.stage_weights, strict=True)]
    switch = PlateauSwitch(p.plateau_window, p.plateau_tol) if p.switch_on_plateau else None
    return BudgetAllocator(
        p.epsilon, p.delta, planned, q, stages=stages,
        accountant=_accountant(p.accountant, fixed_size), sampling=sampling, switch=switch,
    )  # fmt: skip


def _accountant(chosen: str, fixed_size: bool) -> str:
    """``privacy.accountant``; ``auto``: RDP for fixed-size cohorts (the only fixed-size
    event dp-accounting has), PLD (tighter) for Poisson ones."""
    if chosen != "auto":
        return chosen
    return "rdp" if fixed_size else "pld"


def distributed_allocator(config: FedConfig, num_clients: int) -> BudgetAllocator | None:
    """The allocator of ``privacy.mechanism: distributed`` (fixed-size cohorts), or None."""
    if config.privacy.mechanism != "distributed":
        return None
    return dp_allocator(config, num_clients, fixed_size=True)


def distributed_hook(
    pipeline: Pipeline, allocator: BudgetAllocator | None
) -> tuple[RoundHook, ...]:
    """The budget hook of distributed DP, reading the shares from the ring codec.

    Raises:
        ConfigError: the pipeline's codec carries no noise shares.
    """
    from fedstrata.privacy.distributed import NoiseShares
    from fedstrata.privacy.distributed_hook import DistributedDPHook
    from fedstrata.secagg import RingCodec

    codec = pipeline.codec
    shares = codec.noise_fn if isinstance(codec, RingCodec) else None
    if allocator is None or not isinstance(shares, NoiseShares):
        raise ConfigError("privacy.mechanism=distributed needs the secure-aggregation ring codec")
    return (DistributedDPHook(allocator, shares),)


def ring_sensitivity_real(clip_norm: float, ring: Codec) -> float:
    """Central DP under secure aggregation: one client's L2 influence on the decoded sum.

    Clipped to ``C``, scaled by the ring's ``s``, rounded on ``k`` coordinates (each
    by less than one step) and rescaled by ``size / k`` when sparse without error
    feedback: at most ``rescale * (C + sqrt(k) / s)``. The server's noise uses it.

    Raises:
        ConfigError: ``ring`` is not the secure-aggregation ring codec.
    """
    from fedstrata.secagg import RingCodec

    if not isinstance(ring, RingCodec):
        raise ConfigError(f"central DP under secagg needs the ring codec, got {ring.name!r}")
    spec = ring.spec
    rescale = ring.size / ring.count if ring.sparse and not spec.error_feedback else 1.0
    return rescale * (clip_norm + math.sqrt(ring.count) / spec.scale)
