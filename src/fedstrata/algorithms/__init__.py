"""Algorithms: client plans (FedAvg, FedProx) and server optimizers (Reddi et al. 2021).

None of them owns the training loop: they are pure step functions on explicit state
under thin frozen classes.
"""

from fedstrata.algorithms.client import (
    ClientAlgorithm,
    algorithm_of,
    fedavg_plan,
    fedprox_gradient,
    fedprox_plan,
)
from fedstrata.algorithms.registry import (
    AnyServerOptimizer,
    ServerOptimizerName,
    ServerOptimizerSpec,
    make_server_optimizer,
)
from fedstrata.algorithms.server import (
    AdaptiveState,
    EmptyState,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    MomentumState,
    SecondMoment,
    ServerOptimizer,
    adagrad_moment,
    adam_moment,
    adaptive_step,
    fedavg_step,
    fedavgm_step,
    yogi_moment,
)

__all__ = [
    "AdaptiveState",
    "AnyServerOptimizer",
    "ClientAlgorithm",
    "EmptyState",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "MomentumState",
    "SecondMoment",
    "ServerOptimizer",
    "ServerOptimizerName",
    "ServerOptimizerSpec",
    "adagrad_moment",
    "adam_moment",
    "adaptive_step",
    "algorithm_of",
    "fedavg_plan",
    "fedavg_step",
    "fedavgm_step",
    "fedprox_gradient",
    "fedprox_plan",
    "make_server_optimizer",
    "yogi_moment",
]
