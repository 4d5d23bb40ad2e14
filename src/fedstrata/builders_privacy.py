"""Privacy and secure-aggregation builders shared by the simulator and the runtime.

Issue 13 parts 1-2: the gRPC runtime runs differential privacy and secure aggregation
from the same configuration as the simulator, so the pieces are built here, once, below
both drivers (:mod:`fedstrata.api` re-exports them; the runtime imports neither the
simulator nor :mod:`fedstrata.api`): the budget allocator (uniform or staged), distributed
DP's noise shares, the secure-aggregation ring codec and aggregator, the uplink pipeline
with its privacy stages, and the server's DP hooks. Issue 12 part 4: distributed DP's
noise shares are planned from the same allocator whose hook keeps the budget, so the
clients' shares and the accountant agree.

Heavy optional dependencies (dp-accounting, scipy, cryptography) are imported only by
the builders that need them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from fedstrata.aggregation.clipped import ClipDecoded
from fedstrata.builders_dp import adaptive_server_clip, client_clip_norm, tree_hook
from fedstrata.compress import ChainCodec
from fedstrata.config import FedConfig
from fedstrata.coordinator.hooks import RoundHook
from fedstrata.core.state import ClientStateStore
from fedstrata.errors import ConfigError
from fedstrata.pipeline import Codec, DenseCodec, Pipeline, Stage

if TYPE_CHECKING:
    from fedstrata.privacy import BudgetAllocator
    from fedstrata.privacy.distributed import NoiseShares
    from fedstrata.secagg import RingCodec, RingSpec, SecAggAggregator

__all__ = [
    "StoreFactory",
    "distributed_allocator",
    "distributed_hook",
    "dp_allocator",
    "invited",
    "noise_shares_for",
    "poisson_rate",
    "privacy_hooks",
    "ring_sensitivity_real",
    "sampling_rate",
    "secure_aggregation",
    "uplink_pipeline",
]

StoreFactory = Callable[[], ClientStateStore]
"""Makes the store of clients' error-feedback residuals (disk in the simulator, memory
on a runtime client)."""


def sampling_rate(config: FedConfig, num_clients: int) -> float:
    """Probability that a client takes part in a round."""
    per_round = config.rounds.clients_per_round or num_clients
    return min(1.0, per_round / num_clients)


def poisson_rate(config: FedConfig, num_clients: int) -> float | None:
    """Central DP without secure aggregation samples Poisson cohorts at this rate;
    None: fixed-size cohorts (also under secure aggregation: its cohort)."""
    p = config.privacy
    central = p.mechanism == "central" and not config.secagg.enabled and not p.tree_aggregation
    return sampling_rate(config, num_clients) if central else None


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


def invited(per_round: int, overselect: float) -> int:
    """Clients that start a round: ``ceil(per_round * (1 + overselect))``."""
    return math.ceil(per_round * (1 + overselect) - 1e-9)


def secure_aggregation(
    config: FedConfig,
    size: int,
    num_clients: int,
    largest_client: int | None,
    *,
    allocator: BudgetAllocator | None = None,
    store: StoreFactory | None = None,
) -> tuple[RingCodec, SecAggAggregator] | None:
    """The ring codec and secure aggregator, or None when ``secagg`` is off.

    Issue 12 part 4: the ``compression`` section maps onto the ring (random-k
    support, input bits, stochastic rounding), the ring is the narrowest that holds
    the cohort's sum, ``scheduling.allocation``'s partial-work weights are rounded to
    the integers the ring carries, and with ``privacy.mechanism: distributed`` each
    client adds its noise share (planned by ``allocator``) in the ring. With
    ``compression.error_feedback`` clients keep their residuals in ``store()``.

    Args:
        config: the configuration.
        size: model parameters.
        num_clients: clients of the federation.
        largest_client: examples of the largest client (the weight cap without
            ``secagg.max_weight``); None where nobody knows it (a deployment whose
            clients hold their own data): then ``secagg.max_weight`` must be set,
            unless DP weights uniformly.

    Raises:
        ConfigError: error feedback without ``store``, an unknown largest client
            without ``secagg.max_weight``, or the ring overflows.
    """
    s = config.secagg
    if not s.enabled:
        return None
    from fedstrata.compress import randk_support
    from fedstrata.secagg import (  # deferred: cryptography
        SecAggOptions,
        fit_modulus,
        secagg_components,
    )

    comp = config.compression.spec() if config.compression.enabled else None
    spec = s.ring_spec(comp)
    uniform = config.privacy.enabled  # the simulation weights uniformly under DP
    if largest_client is None and not uniform and s.max_weight is None:
        raise ConfigError(
            "secagg.max_weight must be set where the clients' data sizes are not known "
            "to every party (a task whose clients hold their own data): the ring's "
            "capacity and the integer weights depend on it"
        )
    largest = 1 if uniform else (largest_client or s.max_weight or 1)
    max_weight = s.max_weight or largest
    per_round = config.rounds.clients_per_round or num_clients
    cohort = min(num_clients, invited(per_round, config.scheduling.overselect))
    shares, survivors = None, 0
    if config.privacy.mechanism == "distributed":
        allocator = allocator or dp_allocator(config, num_clients, fixed_size=True)
        shares, survivors = noise_shares_for(config, allocator, spec, size, cohort)
        spec = replace(spec, noise_bound=shares.bound)
    options = SecAggOptions(
        expected_cohort=cohort,
        max_weight=max_weight,
        dropout_rate=s.dropout_rate,
        sparse_graph=s.sparse_graph,
        precompute_masks=s.precompute_masks,
        root_seed=config.seed,
        round_weights=config.scheduling.allocation or max_weight < largest,
        weight_scale=min(1.0, max_weight / largest),
        min_survivors=survivors,
    )
    spec = fit_modulus(spec, cohort * max_weight)
    if spec.error_feedback and store is None:
        raise ConfigError("compression.error_feedback under secagg needs a client state store")
    residuals = store() if spec.error_feedback and store is not None else None
    return secagg_components(
        spec, options, size, randk_support, noise_fn=shares, state_store=residuals
    )


def uplink_pipeline(
    config: FedConfig, size: int, store: StoreFactory, ring: Codec | None = None
) -> Pipeline | None:
    """The uplink pipeline (privacy stages, then the ring or the compression chain), or
    None for the dense fast path. ``store()`` holds error-feedback residuals."""
    stages: list[Stage] = []
    if config.privacy.enabled:
        from fedstrata.privacy import CentralGaussian, FixedClip  # deferred: imports scipy

        clip = client_clip_norm(config.privacy)
        stages.append(FixedClip(clip))
        if config.privacy.mechanism == "central" and not config.privacy.tree_aggregation:
            noise_clip = clip if ring is None else ring_sensitivity_real(clip, ring)
            stages.append(CentralGaussian(noise_multiplier=0.0, clip_norm=noise_clip))
    if ring is not None:
        return Pipeline(stages, ring)
    if not stages and not config.compression.enabled:
        return None
    spec = config.compression.spec()
    if not config.compression.enabled:
        dense: Codec = DenseCodec(size)
        if config.privacy.adaptive_clip:  # the server clips again, to the adapted norm
            dense = ClipDecoded(dense, client_clip_norm(config.privacy))
        return Pipeline(stages, dense)
    codec: Codec = ChainCodec(spec, size, store() if spec.error_feedback else None)
    if config.privacy.enabled:  # a lossy decoding may exceed clip_norm: clip it again
        codec = ClipDecoded(codec, client_clip_norm(config.privacy))
    return Pipeline(stages, codec)


def privacy_hooks(
    config: FedConfig,
    pipeline: Pipeline | None,
    num_clients: int,
    size: int | None = None,
    allocator: BudgetAllocator | None = None,
) -> tuple[RoundHook, ...]:
    """The DP hook (budget allocator, and noise for central DP), or nothing.

    ``allocator``: distributed DP's (:func:`distributed_allocator`), whose plan set
    the clients' noise shares in the ring codec. With the model's ``size`` a WARNING
    is logged when central noise dwarfs the signal.
    """
    p = config.privacy
    if not p.enabled or pipeline is None:
        return ()
    if p.mechanism == "distributed":
        return distributed_hook(pipeline, allocator)
    if p.tree_aggregation:
        return (tree_hook(config, num_clients, size),)
    from fedstrata.privacy import CentralGaussian
    from fedstrata.privacy.hook import CentralDPHook

    mechanism = next(s for s in pipeline.stages if isinstance(s, CentralGaussian))
    q = sampling_rate(config, num_clients)
    allocator = dp_allocator(config, num_clients, fixed_size=config.secagg.enabled)
    server_clip = pipeline.codec if isinstance(pipeline.codec, ClipDecoded) else None
    z_max = max(stage.noise_multiplier for stage in allocator.plan)
    adaptive = adaptive_server_clip(config, pipeline.codec, q * num_clients, z_max)
    hook = CentralDPHook(
        allocator, mechanism, q * num_clients, server_clip=server_clip, adaptive=adaptive
    )
    if size is not None:
        hook.check_noise(size)
    return (hook,)
