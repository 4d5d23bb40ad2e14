"""Differential privacy: clipping, noise mechanisms, accounting and the budget allocator.

Trust model, guarantees and how to choose the clip norm and the budget:
``docs/privacy.md``.
"""

from fedstrata.privacy.accounting import (
    AccountantState,
    AccountingMethod,
    PrivacyAccountant,
    RoundEvent,
    Sampling,
    SamplingKind,
    epsilon_of_events,
    to_dp_event,
)
from fedstrata.privacy.allocator import BudgetAllocator
from fedstrata.privacy.budget import (
    DEFAULT_STAGES,
    AllocatorState,
    PlateauSwitch,
    PrivacyRoundMetrics,
    StagePlan,
    StageSpec,
    is_plateau,
    split_rounds,
)
from fedstrata.privacy.calibration import Calibration, calibrate_stages
from fedstrata.privacy.clipping import (
    AdaptiveClip,
    AdaptiveClipState,
    FixedClip,
    adaptive_clip_step,
    clip_l2,
    l2_norm,
    update_noise_multiplier,
)
from fedstrata.privacy.mechanisms import (
    CentralGaussian,
    DistributedDiscreteGaussian,
    DistributedSkellam,
    LocalGaussian,
)
from fedstrata.privacy.noise import discrete_gaussian, discrete_laplace, gaussian, skellam

__all__ = [
    "DEFAULT_STAGES",
    "AccountantState",
    "AccountingMethod",
    "AdaptiveClip",
    "AdaptiveClipState",
    "AllocatorState",
    "BudgetAllocator",
    "Calibration",
    "CentralGaussian",
    "DistributedDiscreteGaussian",
    "DistributedSkellam",
    "FixedClip",
    "LocalGaussian",
    "PlateauSwitch",
    "PrivacyAccountant",
    "PrivacyRoundMetrics",
    "RoundEvent",
    "Sampling",
    "SamplingKind",
    "StagePlan",
    "StageSpec",
    "adaptive_clip_step",
    "calibrate_stages",
    "clip_l2",
    "discrete_gaussian",
    "discrete_laplace",
    "epsilon_of_events",
    "gaussian",
    "is_plateau",
    "l2_norm",
    "skellam",
    "split_rounds",
    "to_dp_event",
    "update_noise_multiplier",
]
