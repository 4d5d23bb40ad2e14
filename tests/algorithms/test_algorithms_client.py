"""Client plans (FedAvg, FedProx), the server-optimizer registry, and the API surface."""

from __future__ import annotations

import numpy as np
import pytest

from fedstrata import algorithms
from fedstrata.algorithms import (
    ClientAlgorithm,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    ServerOptimizerSpec,
    algorithm_of,
    fedavg_plan,
    fedprox_gradient,
    fedprox_plan,
    make_server_optimizer,
)
from fedstrata.core import LocalPlan, OptimizerKind
from fedstrata.errors import ConfigError, ShapeError


def test_fedavg_plan_defaults_to_one_epoch_without_prox() -> None:
    plan = fedavg_plan()
    assert plan == LocalPlan(batch_size=8, lr=0.05, epochs=1, steps=None, prox_mu=0.0)
    assert algorithm_of(plan) is ClientAlgorithm.FEDAVG


def test_fedavg_plan_with_steps() -> None:
    plan = fedavg_plan(steps=20, lr=0.1, optimizer=OptimizerKind.ADAM)
    assert (plan.epochs, plan.steps, plan.lr, plan.optimizer) == (
        None,
        20,
        0.1,
        OptimizerKind.ADAM,
    )


def test_fedprox_plan_sets_mu_and_keeps_the_rest() -> None:
    plan = fedprox_plan(0.01, epochs=2, batch_size=16, momentum=0.9)
    assert plan.prox_mu == 0.01
    assert (plan.epochs, plan.batch_size, plan.momentum) == (2, 16, 0.9)
    assert algorithm_of(plan) is ClientAlgorithm.FEDPROX
    assert ClientAlgorithm.FEDPROX.value == "fedprox"


@pytest.mark.parametrize("mu", [0.0, -1.0, float("nan"), float("inf")])
def test_fedprox_plan_needs_positive_mu(mu: float) -> None:
    with pytest.raises(ConfigError, match=r"fedprox_plan\.mu must be finite and > 0"):
        fedprox_plan(mu)


def test_plan_errors_come_from_local_plan() -> None:
    with pytest.raises(ConfigError, match="exactly one of epochs and steps"):
        fedavg_plan(epochs=1, steps=3)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        fedprox_plan(0.1, lr=0.0)


def test_fedprox_gradient_adds_the_proximal_pull() -> None:
    grad = np.array([1.0, -1.0], np.float32)
    w = np.array([2.0, 0.0], np.float32)
    w_global = np.array([1.0, 1.0], np.float32)
    out = fedprox_gradient(grad, w, w_global, mu=0.5)
    np.testing.assert_array_equal(out, [1.5, -1.5])
    assert out.dtype == np.float32
    with pytest.raises(ShapeError, match="shapes differ"):
        fedprox_gradient(grad, w, np.zeros(3, np.float32), 0.5)
    with pytest.raises(ShapeError, match="grad must be a float32"):
        fedprox_gradient(grad.astype(np.float64), w, w_global, 0.5)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ServerOptimizerSpec(), FedAvg(1.0)),
        (ServerOptimizerSpec(name="fedavgm", lr=0.5, momentum=0.8), FedAvgM(0.5, 0.8)),
        (ServerOptimizerSpec(name="fedadam", lr=0.01, beta2=0.999), FedAdam(0.01, 0.9, 0.999)),
        (ServerOptimizerSpec(name="fedyogi", lr=0.02, tau=1e-2), FedYogi(0.02, tau=1e-2)),
        (ServerOptimizerSpec(name="fedadagrad", lr=0.1, beta1=0.0), FedAdagrad(0.1, beta1=0.0)),
    ],
)
def test_make_server_optimizer(spec: ServerOptimizerSpec, expected: object) -> None:
    assert make_server_optimizer(spec) == expected


def test_server_optimizer_spec_validation() -> None:
    with pytest.raises(ConfigError, match=r"ServerOptimizerSpec\.name must be one of"):
        ServerOptimizerSpec(name="sgd")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"FedAdam\.beta1 must be in \[0, 1\), got 1\.0"):
        make_server_optimizer(ServerOptimizerSpec(name="fedadam", beta1=1.0))


def test_public_api_surface() -> None:
    assert len(set(algorithms.__all__)) == len(algorithms.__all__)
    for name in algorithms.__all__:
        assert getattr(algorithms, name) is not None
    expected = {"ServerOptimizer", "FedAvg", "FedAvgM", "FedAdagrad", "FedAdam", "FedYogi"}
    assert expected | {"fedavg_plan", "fedprox_plan", "make_server_optimizer"} <= set(
        algorithms.__all__
    )
