"""Server optimizers: pure step functions on explicit state, under thin frozen classes.

The server treats the aggregated client delta ``delta = mean(new - old)`` as a
pseudo-gradient with the sign of a descent step, so ``params + delta`` is FedAvg.

* FedAvg: McMahan et al., AISTATS 2017 (with a server learning rate).
* FedAvgM: Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data
  Distribution for Federated Visual Classification", 2019:
  ``v_t = momentum * v_{t-1} + delta_t``, ``x_{t+1} = x_t + lr * v_t``.
* FedAdagrad, FedAdam, FedYogi: Reddi et al., "Adaptive Federated Optimization",
  ICLR 2021, Algorithm 2 (no bias correction, ``m_{-1} = 0``, ``v_{-1} = tau^2``)::

      m_t = beta1 m_{t-1} + (1 - beta1) delta_t
      v_t = v_{t-1} + delta_t^2                                     (FedAdagrad)
      v_t = beta2 v_{t-1} + (1 - beta2) delta_t^2                   (FedAdam)
      v_t = v_{t-1} - (1 - beta2) delta_t^2 sign(v_{t-1} - delta_t^2)  (FedYogi)
      x_{t+1} = x_t + lr m_t / (sqrt(v_t) + tau)

Everything is vectorised on the flat float32 vector; moments are kept in float32.
Step functions never mutate their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar, final

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.params import FloatVector
from fedstrata.errors import CheckpointCorrupt, ConfigError, ShapeError

__all__ = [
    "AdaptiveState",
    "EmptyState",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "MomentumState",
    "SecondMoment",
    "ServerOptimizer",
    "adagrad_moment",
    "adam_moment",
    "adaptive_step",
    "fedavg_step",
    "fedavgm_step",
    "yogi_moment",
]

S = TypeVar("S")
SecondMoment = Callable[[FloatVector, FloatVector, float], FloatVector]
"""``(v, delta**2, beta2) -> new v``: the rule that distinguishes Adagrad, Adam, Yogi."""


class ServerOptimizer(Protocol[S]):
    """Turns the aggregated delta into new global parameters."""

    def init(self, params: FloatVector) -> S:
        """The optimizer state for a model starting at ``params``."""
        ...

    def step(self, params: FloatVector, delta: FloatVector, state: S) -> tuple[FloatVector, S]:
        """New parameters and state after applying ``delta``; inputs are not mutated."""
        ...


# ---------------------------------------------------------------- states


@dataclass(frozen=True, eq=False)
class EmptyState:
    """State of optimizers that keep none (FedAvg)."""

    def to_arrays(self) -> dict[str, NDArray[np.generic]]:
        return {}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[np.generic]]) -> EmptyState:
        return cls()


@dataclass(frozen=True, eq=False)
class MomentumState:
    """FedAvgM's velocity ``v`` (float32)."""

    velocity: FloatVector

    def to_arrays(self) -> dict[str, NDArray[np.generic]]:
        return {"velocity": self.velocity.copy()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[np.generic]]) -> MomentumState:
        """Inverse of :meth:`to_arrays`.

        Raises:
            CheckpointCorrupt: a missing key or an array that is not 1-D float32.
        """
        return cls(_load_vector(arrays, "velocity"))


@dataclass(frozen=True, eq=False)
class AdaptiveState:
    """First and second moments ``m``, ``v`` (float32) and the step count."""

    m: FloatVector
    v: FloatVector
    step: int = 0

    def to_arrays(self) -> dict[str, NDArray[np.generic]]:
        return {"m": self.m.copy(), "v": self.v.copy(), "step": np.array(self.step, np.int64)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, NDArray[np.generic]]) -> AdaptiveState:
        """Inverse of :meth:`to_arrays`.

        Raises:
            CheckpointCorrupt: missing keys, arrays of the wrong kind, or sizes that differ.
        """
        m, v = _load_vector(arrays, "m"), _load_vector(arrays, "v")
        if m.shape != v.shape:
            raise CheckpointCorrupt(f"optimizer state m {m.shape} and v {v.shape} differ")
        step = arrays.get("step")
        if step is None or step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise CheckpointCorrupt(f"optimizer state 'step' must be an integer >= 0: {step}")
        return cls(m=m, v=v, step=int(step))


def _load_vector(arrays: Mapping[str, NDArray[np.generic]], key: str) -> FloatVector:
    value = arrays.get(key)
    if value is None:
        raise CheckpointCorrupt(f"optimizer state lacks array {key!r}")
    if value.ndim != 1 or value.dtype != np.float32:
        raise CheckpointCorrupt(
            f"optimizer state {key!r} must be 1-D float32, got {value.dtype} {value.shape}"
        )
    return np.array(value, dtype=np.float32, copy=True)


# ---------------------------------------------------------------- pure kernels


def _check_pair(params: FloatVector, delta: FloatVector) -> None:
    for what, vec in (("params", params), ("delta", delta)):
        if not isinstance(vec, np.ndarray) or vec.ndim != 1 or vec.dtype != np.float32:
            raise ShapeError(f"server step: {what} must be a 1-D float32 array")
    if params.shape != delta.shape:
        raise ShapeError(f"server step: params {params.shape} and delta {delta.shape} differ")


def _check_state(params: FloatVector, *moments: FloatVector) -> None:
    for moment in moments:
        if moment.shape != params.shape:
            raise ShapeError(
                f"server step: optimizer state {moment.shape} does not match params {params.shape}"
            )


def fedavg_step(params: FloatVector, delta: FloatVector, server_lr: float) -> FloatVector:
    """``params + server_lr * delta`` in float32; exactly ``params + delta`` at lr 1.

    Raises:
        ShapeError: params and delta are not float32 vectors of one size.
    """
    _check_pair(params, delta)
    if server_lr == 1.0:
        return params + delta
    return params + np.float32(server_lr) * delta


def fedavgm_step(
    params: FloatVector,
    delta: FloatVector,
    velocity: FloatVector,
    server_lr: float,
    momentum: float,
) -> tuple[FloatVector, FloatVector]:
    """Heavy-ball server momentum; returns ``(new_params, new_velocity)``.

    Raises:
        ShapeError: mismatched sizes or dtypes.
    """
    _check_pair(params, delta)
    _check_state(params, velocity)
    new_velocity = np.float32(momentum) * velocity + delta
    return fedavg_step(params, new_velocity, server_lr), new_velocity


def adagrad_moment(v: FloatVector, delta_sq: FloatVector, beta2: float) -> FloatVector:
    """FedAdagrad: ``v + delta^2`` (``beta2`` unused)."""
    return v + delta_sq


def adam_moment(v: FloatVector, delta_sq: FloatVector, beta2: float) -> FloatVector:
    """FedAdam: ``beta2 v + (1 - beta2) delta^2``."""
    return np.float32(beta2) * v + np.float32(1.0 - beta2) * delta_sq


def yogi_moment(v: FloatVector, delta_sq: FloatVector, beta2: float) -> FloatVector:
    """FedYogi: ``v - (1 - beta2) delta^2 sign(v - delta^2)``."""
    sign: FloatVector = np.sign(v - delta_sq)
    return v - np.float32(1.0 - beta2) * delta_sq * sign


def adaptive_step(
    params: FloatVector,
    delta: FloatVector,
    state: AdaptiveState,
    second_moment: SecondMoment,
    *,
    server_lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[FloatVector, AdaptiveState]:
    """One step of Reddi et al.'s Algorithm 2 with the given second-moment rule.

    Raises:
        ShapeError: mismatched sizes or dtypes.
    """
    _check_pair(params, delta)
    _check_state(params, state.m, state.v)
    m = np.float32(beta1) * state.m + np.float32(1.0 - beta1) * delta
    v = second_moment(state.v, delta * delta, beta2)
    new_params = params + np.float32(server_lr) * m / (np.sqrt(v) + np.float32(tau))
    return new_params.astype(np.float32, copy=False), AdaptiveState(m=m, v=v, step=state.step + 1)


# ---------------------------------------------------------------- validation


def _require(ok: bool, owner: str, name: str, value: float, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{owner}.{name} must be {rule}, got {value!r}")


def _check_lr(owner: str, server_lr: float) -> None:
    finite = math.isfinite(server_lr)
    _require(finite and server_lr > 0, owner, "server_lr", server_lr, "finite and > 0")


def _check_unit(owner: str, name: str, value: float) -> None:
    _require(0.0 <= value < 1.0, owner, name, value, "in [0, 1)")


# ---------------------------------------------------------------- optimizers


@final
@dataclass(frozen=True)
class FedAvg:
    """``x + server_lr * delta`` (McMahan et al. 2017); keeps no state."""

    server_lr: float = 1.0

    def __post_init__(self) -> None:
        _check_lr("FedAvg", self.server_lr)

    def init(self, params: FloatVector) -> EmptyState:
        return EmptyState()

    def step(
        self, params: FloatVector, delta: FloatVector, state: EmptyState
    ) -> tuple[FloatVector, EmptyState]:
        """Apply the aggregated ``delta``; returns the new parameters and state.

        Raises:
            ShapeError: params, delta and state are not float32 vectors of one size.
        """
        return fedavg_step(params, delta, self.server_lr), state


@final
@dataclass(frozen=True)
class FedAvgM:
    """FedAvg with server momentum (Hsu et al. 2019); momentum 0 is exactly FedAvg."""

    server_lr: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        _check_lr("FedAvgM", self.server_lr)
        _check_unit("FedAvgM", "momentum", self.momentum)

    def init(self, params: FloatVector) -> MomentumState:
        return MomentumState(np.zeros_like(params, dtype=np.float32))

    def step(
        self, params: FloatVector, delta: FloatVector, state: MomentumState
    ) -> tuple[FloatVector, MomentumState]:
        """Apply the aggregated ``delta``; returns the new parameters and state.

        Raises:
            ShapeError: params, delta and state are not float32 vectors of one size.
        """
        new_params, velocity = fedavgm_step(
            params, delta, state.velocity, self.server_lr, self.momentum
        )
        return new_params, MomentumState(velocity)


@dataclass(frozen=True)
class _AdaptiveBase:
    """Hyperparameters shared by the adaptive optimizers (Reddi et al. 2021)."""

    server_lr: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_lr(owner, self.server_lr)
        _check_unit(owner, "beta1", self.beta1)
        _check_unit(owner, "beta2", self.beta2)
        _require(math.isfinite(self.tau) and self.tau > 0, owner, "tau", self.tau, "> 0")

    def init(self, params: FloatVector) -> AdaptiveState:
        """``m = 0`` and ``v = tau^2`` (Algorithm 2: ``v_{-1} >= tau^2``)."""
        m = np.zeros_like(params, dtype=np.float32)
        return AdaptiveState(m=m, v=np.full_like(m, np.float32(self.tau) ** 2))

    def _step(
        self, params: FloatVector, delta: FloatVector, state: AdaptiveState, rule: SecondMoment
    ) -> tuple[FloatVector, AdaptiveState]:
        return adaptive_step(
            params,
            delta,
            state,
            rule,
            server_lr=self.server_lr,
            beta1=self.beta1,
            beta2=self.beta2,
            tau=self.tau,
        )


@final
@dataclass(frozen=True)
class FedAdagrad(_AdaptiveBase):
    """Server Adagrad with momentum ``beta1`` (``beta2`` is unused)."""

    def step(
        self, params: FloatVector, delta: FloatVector, state: AdaptiveState
    ) -> tuple[FloatVector, AdaptiveState]:
        """Apply the aggregated ``delta``; returns the new parameters and state.

        Raises:
            ShapeError: params, delta and state are not float32 vectors of one size.
        """
        return self._step(params, delta, state, adagrad_moment)


@final
@dataclass(frozen=True)
class FedAdam(_AdaptiveBase):
    """Server Adam without bias correction, as in Reddi et al. Algorithm 2."""

    def step(
        self, params: FloatVector, delta: FloatVector, state: AdaptiveState
    ) -> tuple[FloatVector, AdaptiveState]:
        """Apply the aggregated ``delta``; returns the new parameters and state.

        Raises:
            ShapeError: params, delta and state are not float32 vectors of one size.
        """
        return self._step(params, delta, state, adam_moment)


@final
@dataclass(frozen=True)
class FedYogi(_AdaptiveBase):
    """Server Yogi (Zaheer et al. 2018) as in Reddi et al. Algorithm 2."""

    def step(
        self, params: FloatVector, delta: FloatVector, state: AdaptiveState
    ) -> tuple[FloatVector, AdaptiveState]:
        """Apply the aggregated ``delta``; returns the new parameters and state.

        Raises:
            ShapeError: params, delta and state are not float32 vectors of one size.
        """
        return self._step(params, delta, state, yogi_moment)
