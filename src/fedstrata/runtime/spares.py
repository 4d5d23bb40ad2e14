"""How many standby edge aggregators to keep: a target spare fraction of predicted load.

The pool keeps ``fraction`` (default 10%) of the edges the federation is *predicted*
to need as spares, at least ``min_spares``. What predicts the load: the number of
reachable clients per round (what the center's roster reports), forecast
``horizon_rounds`` ahead with Holt's linear (double exponential) smoothing, so the
pool grows ahead of a federation that is growing and shrinks behind one that is
shrinking; the edges needed are that forecast over an edge's client capacity. The
horizon should cover a spare's start-up time in rounds (a spare started now must be
ready when the load arrives).

:class:`SparePool` reconciles: after each round it observes the load, and starts or
retires spares (through callables the deployment gives it: processes, containers,
cloud instances) until the pool holds the target. The chaos harness sizes its spares
with :func:`target_spares`.

Holt, C. C. "Forecasting seasonals and trends by exponentially weighted moving
averages", 1957 (reprinted Int. J. Forecasting 20(1), 2004).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from fedstrata.errors import ConfigError

__all__ = ["LoadForecast", "SparePolicy", "SparePool", "target_spares"]


@dataclass(frozen=True)
class SparePolicy:
    """The pool's target; see the module docstring.

    Raises:
        ConfigError: a fraction outside [0, 1], a negative minimum, a capacity < 1.
    """

    fraction: float = 0.10
    min_spares: int = 1
    edge_capacity: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"SparePolicy.fraction must be in [0, 1], got {self.fraction}")
        if self.min_spares < 0:
            raise ConfigError(f"SparePolicy.min_spares must be >= 0, got {self.min_spares}")
        if self.edge_capacity < 1:
            raise ConfigError(f"SparePolicy.edge_capacity must be >= 1, got {self.edge_capacity}")


def target_spares(policy: SparePolicy, predicted_clients: float) -> int:
    """Spares to keep for ``predicted_clients`` reachable clients."""
    needed = math.ceil(max(0.0, predicted_clients) / policy.edge_capacity)
    return max(policy.min_spares, math.ceil(policy.fraction * needed - 1e-9))


class LoadForecast:
    """Holt's linear smoothing of the reachable clients per round.

    Args:
        alpha: weight of a new observation in the level (0 < alpha <= 1).
        beta: weight of a new slope in the trend (0 <= beta <= 1).
        horizon_rounds: how far ahead :meth:`predict` looks.

    Raises:
        ConfigError: a weight out of range or a negative horizon.
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.3, horizon_rounds: int = 5) -> None:
        if not 0 < alpha <= 1 or not 0 <= beta <= 1 or horizon_rounds < 0:
            raise ConfigError(
                "LoadForecast needs 0 < alpha <= 1, 0 <= beta <= 1, horizon_rounds >= 0; got "
                f"alpha={alpha}, beta={beta}, horizon_rounds={horizon_rounds}"
            )
        self.alpha, self.beta, self.horizon_rounds = alpha, beta, horizon_rounds
        self.level: float | None = None
        self.trend = 0.0

    def observe(self, clients: float) -> None:
        """One round's reachable clients."""
        if self.level is None:
            self.level = float(clients)
            return
        previous = self.level
        self.level = self.alpha * clients + (1 - self.alpha) * (previous + self.trend)
        self.trend = self.beta * (self.level - previous) + (1 - self.beta) * self.trend

    def predict(self) -> float:
        """Reachable clients ``horizon_rounds`` ahead (never below 0; 0 before any)."""
        if self.level is None:
            return 0.0
        return max(0.0, self.level + self.horizon_rounds * self.trend)


class SparePool:
    """Keeps :func:`target_spares` spares for the forecast load.

    Args:
        policy: the target's fraction, minimum and edge capacity.
        forecast: the load predictor (observed once per round).
        start: starts one spare and returns its handle.
        retire: stops the spare of a handle.

    Ownership: the pool owns the handles it started and not yet retired or
    :meth:`promote` d (a spare that took a dead edge's clients is an edge now).
    """

    def __init__(
        self,
        policy: SparePolicy,
        forecast: LoadForecast,
        start: Callable[[], object],
        retire: Callable[[object], None],
    ) -> None:
        self.policy, self.forecast, self.start, self.retire = policy, forecast, start, retire
        self.spares: list[object] = []

    def observe(self, reachable_clients: int) -> int:
        """One round's load: start or retire spares to the new target; returns it."""
        self.forecast.observe(reachable_clients)
        target = target_spares(self.policy, self.forecast.predict())
        while len(self.spares) < target:
            self.spares.append(self.start())
        while len(self.spares) > target:
            self.retire(self.spares.pop())
        return target

    def promote(self, handle: object) -> None:
        """``handle`` took over a dead edge: it leaves the pool (the next
        :meth:`observe` starts a replacement)."""
        self.spares.remove(handle)
