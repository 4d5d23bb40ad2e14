"""Build a server optimizer from a typed spec (names match ``ServerConfig.optimizer``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedstrata.algorithms.server import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi
from fedstrata.errors import ConfigError

__all__ = [
    "AnyServerOptimizer",
    "ServerOptimizerName",
    "ServerOptimizerSpec",
    "make_server_optimizer",
]

ServerOptimizerName = Literal["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"]
AnyServerOptimizer = FedAvg | FedAvgM | FedAdagrad | FedAdam | FedYogi
_NAMES: tuple[str, ...] = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")


@dataclass(frozen=True)
class ServerOptimizerSpec:
    """Which server optimizer to build and its hyperparameters (Reddi et al. 2021).

    Fields an optimizer does not use are ignored (``momentum`` is FedAvgM's only;
    ``beta1``, ``beta2`` and ``tau`` belong to the adaptive optimizers). Ranges are
    checked by the optimizer's own constructor.

    Attributes:
        name: the optimizer.
        lr: server learning rate ``eta``.
        momentum: FedAvgM's momentum, in ``[0, 1)``.
        beta1: first-moment decay, in ``[0, 1)``.
        beta2: second-moment decay, in ``[0, 1)``.
        tau: adaptivity ``tau`` > 0.
    """

    name: ServerOptimizerName = "fedavg"
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in _NAMES:
            raise ConfigError(
                f"ServerOptimizerSpec.name must be one of {_NAMES}, got {self.name!r}"
            )


def make_server_optimizer(spec: ServerOptimizerSpec) -> AnyServerOptimizer:
    """The server optimizer ``spec`` describes.

    Raises:
        ConfigError: a hyperparameter out of range (named in the message).
    """
    if spec.name == "fedavg":
        return FedAvg(server_lr=spec.lr)
    if spec.name == "fedavgm":
        return FedAvgM(server_lr=spec.lr, momentum=spec.momentum)
    lr, beta1, beta2, tau = spec.lr, spec.beta1, spec.beta2, spec.tau
    if spec.name == "fedadam":
        return FedAdam(server_lr=lr, beta1=beta1, beta2=beta2, tau=tau)
    if spec.name == "fedyogi":
        return FedYogi(server_lr=lr, beta1=beta1, beta2=beta2, tau=tau)
    return FedAdagrad(server_lr=lr, beta1=beta1, beta2=beta2, tau=tau)
