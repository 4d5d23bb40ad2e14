"""Client algorithms as :class:`~fedstrata.core.training.LocalPlan` builders.

* FedAvg: McMahan et al., "Communication-Efficient Learning of Deep Networks from
  Decentralized Data", AISTATS 2017: local SGD from the global model.
* FedProx: Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020:
  local objective ``F_k(w) + mu/2 ||w - w_global||^2``, whose gradient adds
  ``mu (w - w_global)`` (:func:`fedprox_gradient`).

The trainer (``fedstrata.torch_adapter``) owns the local loop; these functions only
describe it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from enum import StrEnum

import numpy as np

from fedstrata.core.params import FloatVector
from fedstrata.core.training import LocalPlan, OptimizerKind
from fedstrata.errors import ConfigError, ShapeError

__all__ = ["ClientAlgorithm", "algorithm_of", "fedavg_plan", "fedprox_gradient", "fedprox_plan"]


class ClientAlgorithm(StrEnum):
    """The local algorithm a plan runs, for reports and run metadata."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"


def fedavg_plan(
    *,
    lr: float = 0.05,
    batch_size: int = 8,
    epochs: int | None = None,
    steps: int | None = None,
    optimizer: OptimizerKind = OptimizerKind.SGD,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> LocalPlan:
    """Plain local training; one epoch unless ``epochs`` or ``steps`` is given.

    Raises:
        ConfigError: both ``epochs`` and ``steps`` given, or a value out of range.
    """
    if epochs is None and steps is None:
        epochs = 1
    return LocalPlan(
        batch_size=batch_size,
        lr=lr,
        epochs=epochs,
        steps=steps,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        prox_mu=0.0,
    )


def fedprox_plan(
    mu: float,
    *,
    lr: float = 0.05,
    batch_size: int = 8,
    epochs: int | None = None,
    steps: int | None = None,
    optimizer: OptimizerKind = OptimizerKind.SGD,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> LocalPlan:
    """Local training with the FedProx proximal term ``mu/2 ||w - w_global||^2``.

    Raises:
        ConfigError: ``mu`` not finite and > 0 (use :func:`fedavg_plan` for 0), both
            ``epochs`` and ``steps`` given, or another value out of range.
    """
    if not (math.isfinite(mu) and mu > 0):
        raise ConfigError(f"fedprox_plan.mu must be finite and > 0, got {mu!r}")
    plan = fedavg_plan(
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        steps=steps,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
    )
    return replace(plan, prox_mu=mu)


def algorithm_of(plan: LocalPlan) -> ClientAlgorithm:
    """FedProx if the plan has a proximal term, else FedAvg."""
    return ClientAlgorithm.FEDPROX if plan.prox_mu > 0 else ClientAlgorithm.FEDAVG


def fedprox_gradient(
    grad: FloatVector, params: FloatVector, global_params: FloatVector, mu: float
) -> FloatVector:
    """``grad + mu (params - global_params)``: the FedProx gradient, a new float32 array.

    Raises:
        ShapeError: the three vectors are not float32 of one shape.
    """
    for what, vec in (("grad", grad), ("params", params), ("global_params", global_params)):
        if not isinstance(vec, np.ndarray) or vec.dtype != np.float32:
            raise ShapeError(f"fedprox_gradient: {what} must be a float32 array")
    if not grad.shape == params.shape == global_params.shape:
        raise ShapeError(
            f"fedprox_gradient: shapes differ: grad {grad.shape}, params {params.shape}, "
            f"global_params {global_params.shape}"
        )
    return grad + np.float32(mu) * (params - global_params)
