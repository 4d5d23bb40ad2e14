"""Expected simulated time of a flat synchronous round, over the random cohort.

A flat round ends at the latest arrival in its cohort, or at the deadline when a member
misses it: ``min(max_{i in cohort} arrival_i, deadline)`` (``docs/simulator.md``). With
the population's arrivals sorted, ``t_(1) <= ... <= t_(n)``, the latest arrival of the
cohort is ``t_(i)`` with probability

* ``C(i-1, k-1) / C(n, k)`` for a uniform cohort of ``k`` (the maximum of a sample
  drawn without replacement is ``t_(i)`` when ``i`` is drawn and the other ``k-1``
  come from below it), and
* ``q (1-q)^(n-i)`` under Poisson sampling at rate ``q`` (client ``i`` joins, none
  above it does; an empty cohort takes no time),

so the expectation is one dot product. ``fedstrata plan`` predicts a flat round with it
from the arrivals of :meth:`fedstrata.sim.ProfileTable.legs_s`, the model the simulator
times every client with.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import ConfigError

__all__ = ["expected_round_s", "latest_arrival_weights"]

F64 = NDArray[np.float64]


def latest_arrival_weights(
    n: int, *, cohort: int | None = None, poisson_rate: float | None = None
) -> F64:
    """Probability that the ``i``-th smallest of ``n`` arrivals is the cohort's latest.

    Args:
        n: population size.
        cohort: clients drawn uniformly without replacement (``None``: all ``n``).
        poisson_rate: when set, each client joins independently with this probability
            (``cohort`` is then ignored).

    Raises:
        ConfigError: ``n`` < 0, ``cohort`` < 1, or a rate outside (0, 1].
    """
    if n < 0:
        raise ConfigError(f"population size must be >= 0, got {n}")
    i = np.arange(1, n + 1, dtype=np.float64)
    if poisson_rate is not None:
        if not 0 < poisson_rate <= 1:
            raise ConfigError(f"poisson_rate must be in (0, 1], got {poisson_rate}")
        out: F64 = poisson_rate * (1.0 - poisson_rate) ** (n - i)
        return out
    if cohort is not None and cohort < 1:
        raise ConfigError(f"cohort must be >= 1, got {cohort}")
    k = n if cohort is None else min(cohort, n)
    weights = np.zeros(n)
    if k == 0:
        return weights
    # log C(i-1, k-1) - log C(n, k) for i = k..n, by the ratio C(i, k-1) / C(i-1, k-1)
    steps = np.log(i[k - 1 : n - 1] / (i[k - 1 : n - 1] - k + 1))
    log_top = np.concatenate([[0.0], np.cumsum(steps)])
    log_all = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    weights[k - 1 :] = np.exp(log_top - log_all)
    return weights


def expected_round_s(
    arrival_s: F64,
    *,
    cohort: int | None = None,
    poisson_rate: float | None = None,
    deadline_s: float | None = None,
) -> float:
    """Expected seconds from the round's start to its end (see the module docstring).

    Args:
        arrival_s: each client's arrival after the round starts, were it selected.
        cohort: uniform cohort size (``None``: every client).
        poisson_rate: Poisson sampling rate instead of a fixed cohort.
        deadline_s: the round's deadline, if any.

    Raises:
        ConfigError: bad cohort, rate or deadline, or arrivals that are not finite.
    """
    t = np.sort(np.asarray(arrival_s, dtype=np.float64))
    if not np.isfinite(t).all():
        raise ConfigError("arrival times must be finite")
    if deadline_s is not None:
        if not deadline_s > 0:
            raise ConfigError(f"deadline_s must be > 0, got {deadline_s}")
        t = np.minimum(t, deadline_s)
    weights = latest_arrival_weights(t.size, cohort=cohort, poisson_rate=poisson_rate)
    return float(weights @ t)
