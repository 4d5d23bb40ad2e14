"""Calibrate per-stage noise multipliers so a planned schedule spends exactly its ε.

What "stage ``s`` gets fraction ``w_s`` of the budget" means here. ε does not compose
linearly, so the split is made on an additive scale and the total is then made exact:

1. Cost scale: the zero-concentrated-DP parameter of the (unsampled) Gaussian
   mechanism, ``ρ = 1/(2σ²)`` per round, which adds up over rounds (Bun & Steinke,
   "Concentrated Differential Privacy", TCC 2016).
2. Split: stage ``s`` with ``n_s`` rounds receives ``ρ_s = w_s ρ_total``, so its
   per-round multiplier is ``σ_s(ρ_total) = sqrt(n_s / (2 w_s ρ_total))``.
3. Exact total: ``ρ_total`` is the largest value for which dp-accounting's
   accountant (PLD by default) composes the exact event sequence — ``n_s`` rounds of
   the sampled Gaussian with ``σ_s`` per stage, after any already-run ``prefix`` —
   to ``ε <= ε_total`` at ``δ``; the search stops once ``ε >= (1 - rel_tol) ε_total``.

So the composed ε of the planned schedule is never above the budget and (with the
default ``rel_tol = 1e-3``) within 0.1 % below it. Because of sampling
amplification the *exact* ε spent by each stage is not exactly proportional to
``w_s``; the proportionality is exact on the ρ scale. Alternatives, documented in
``docs/privacy.md``: splitting ε linearly (wastes budget: basic composition),
splitting the RDP curve at one order (depends on the order), and splitting the
noise variance (not a privacy scale).

Speed: a μ-GDP central-limit approximation (Bu, Dong, Long, Su, "Deep Learning with
Gaussian Differential Privacy", HDSR 2020) gives a starting ``ρ`` usually within
tens of percent, then a bracketed Illinois search on ``log ρ`` needs ~5–10 exact
evaluations; results are memoised on the (hashable) arguments.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

from fedstrata.errors import ConfigError, PrivacyBudgetExhausted
from fedstrata.privacy.accounting import (
    DEFAULT_DISCRETIZATION,
    AccountingMethod,
    EventCounts,
    RoundEvent,
    Sampling,
    SamplingKind,
    epsilon_of_counts,
    merge_counts,
)

__all__ = ["Calibration", "calibrate_stages", "gdp_mu_for_epsilon"]

logger = logging.getLogger(__name__)

MIN_NOISE_MULTIPLIER = 0.05  # below this the budget is no longer meaningful
MAX_NOISE_MULTIPLIER = 1e5
_MAX_EVALUATIONS = 60
_POISSON = Sampling()


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate_stages`.

    Attributes:
        noise_multipliers: one σ per stage.
        epsilon: composed ε (prefix + the whole plan) at δ; never above the target.
        rho_total: the ρ budget split across the stages.
        evaluations: how many exact accountant evaluations the search took.
    """

    noise_multipliers: tuple[float, ...]
    epsilon: float
    rho_total: float
    evaluations: int


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _gdp_delta(mu: float, epsilon: float) -> float:
    """δ(ε) of μ-GDP (Dong, Roth, Su 2019, Cor. 2.13)."""
    a, b = -epsilon / mu + mu / 2.0, -epsilon / mu - mu / 2.0
    return _phi(a) - math.exp(epsilon) * _phi(b) if b > -38 else _phi(a)


def gdp_mu_for_epsilon(epsilon: float, delta: float) -> float:
    """The μ for which μ-GDP is (ε, δ)-DP (bisection; δ(ε) increases with μ)."""
    lo, hi = 1e-6, 1e3
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if _gdp_delta(mid, epsilon) < delta else (lo, mid)
    return lo


def _mu_squared(event: RoundEvent, sampling: Sampling) -> float:
    """Per-round μ² of the CLT approximation: ``q² (exp(1/σ²) - 1)``, exact at q = 1."""
    sigma, q = event.noise_multiplier, event.sampling_rate
    if sampling.kind is SamplingKind.FIXED_SIZE:
        sigma /= 2.0
    if q == 1.0:
        return float(sigma**-2)
    return q * q * math.expm1(min(sigma**-2, 700.0))


def _stage_sigmas(
    rho: float, rounds: tuple[int, ...], weights: tuple[float, ...]
) -> tuple[float, ...]:
    return tuple(math.sqrt(n / (2.0 * w * rho)) for n, w in zip(rounds, weights, strict=True))


def _plan_counts(sigmas: tuple[float, ...], rounds: tuple[int, ...], rate: float) -> EventCounts:
    return merge_counts(
        *(((RoundEvent(s, rate), n),) for s, n in zip(sigmas, rounds, strict=True))
    )


@dataclass(frozen=True)
class _Problem:
    target: float
    delta: float
    rate: float
    rounds: tuple[int, ...]
    weights: tuple[float, ...]
    prefix: EventCounts
    sampling: Sampling
    method: AccountingMethod
    discretization: float

    def epsilon(self, log_rho: float) -> float:
        sigmas = _stage_sigmas(math.exp(log_rho), self.rounds, self.weights)
        counts = merge_counts(self.prefix, _plan_counts(sigmas, self.rounds, self.rate))
        return epsilon_of_counts(
            counts, self.delta, self.sampling, self.method, self.discretization
        )

    def initial_log_rho(self) -> float:
        """CLT guess: solve Σ μ²(rounds) = μ(ε, δ)² for ρ by bisection on log ρ."""
        mu2 = gdp_mu_for_epsilon(self.target, self.delta) ** 2
        mu2 -= sum(n * _mu_squared(e, self.sampling) for e, n in self.prefix)
        lo, hi = math.log(1e-12), math.log(1e6)
        for _ in range(80):
            mid = (lo + hi) / 2.0
            sigmas = _stage_sigmas(math.exp(mid), self.rounds, self.weights)
            total = sum(
                n * _mu_squared(RoundEvent(s, self.rate), self.sampling)
                for s, n in zip(sigmas, self.rounds, strict=True)
            )
            lo, hi = (mid, hi) if total < mu2 else (lo, mid)
        return lo

    def log_rho_bounds(self) -> tuple[float, float]:
        """ρ range keeping every stage's σ in [MIN, MAX_NOISE_MULTIPLIER]."""
        ratios = [n / (2.0 * w) for n, w in zip(self.rounds, self.weights, strict=True)]
        low = math.log(max(ratios) / MAX_NOISE_MULTIPLIER**2)
        high = math.log(min(ratios) / MIN_NOISE_MULTIPLIER**2)
        return low, high


def _bracket(
    problem: _Problem, evals: list[float]
) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """Find ``lo`` feasible (ε <= target) and ``hi`` infeasible, expanding from the guess.

    Returns ``(lo, None)`` when ``lo`` already lands in the tolerance band, or when the
    noise floor is reached while still under the target.
    """
    low_bound, high_bound = problem.log_rho_bounds()
    x = min(max(problem.initial_log_rho(), low_bound), high_bound)
    lo: tuple[float, float] | None = None
    hi: tuple[float, float] | None = None
    step = math.log(1.5)
    while lo is None or hi is None:
        eps = problem.epsilon(x)
        evals.append(eps)
        if eps <= problem.target:
            lo = (x, eps)
            if x >= high_bound:
                return lo, None
            x = min(x + step, high_bound) if hi is None else x
        else:
            hi = (x, eps)
            if x <= low_bound:
                raise PrivacyBudgetExhausted(
                    f"no noise multiplier <= {MAX_NOISE_MULTIPLIER:g} keeps ε <= "
                    f"{problem.target} at δ={problem.delta}: the rounds already run spend it"
                )
            x = max(x - step, low_bound) if lo is None else x
        step *= 2.0
    return lo, hi


def _search(problem: _Problem, rel_tol: float) -> tuple[float, float, int]:
    """Illinois false position on ``g(x) = log ε(x) - log target``; returns (x, ε, evals)."""
    evals: list[float] = []
    lo, hi = _bracket(problem, evals)
    floor = problem.target * (1.0 - rel_tol)
    if hi is None or lo[1] >= floor:
        return lo[0], lo[1], len(evals)
    g_lo, g_hi = math.log(lo[1] / problem.target), math.log(hi[1] / problem.target)
    side = 0
    while len(evals) < _MAX_EVALUATIONS and hi[0] - lo[0] > 1e-12:
        x = (lo[0] * g_hi - hi[0] * g_lo) / (g_hi - g_lo)
        eps = problem.epsilon(x)
        evals.append(eps)
        g = math.log(eps / problem.target)
        if eps <= problem.target:
            lo, g_lo = (x, eps), g
            if eps >= floor:
                break
            g_hi, side = (g_hi / 2.0, -1) if side == -1 else (g_hi, -1)
        else:
            hi, g_hi = (x, eps), g
            g_lo, side = (g_lo / 2.0, 1) if side == 1 else (g_lo, 1)
    return lo[0], lo[1], len(evals)


@functools.lru_cache(maxsize=256)
def calibrate_stages(
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    stage_rounds: tuple[int, ...],
    stage_weights: tuple[float, ...],
    *,
    prefix: EventCounts = (),
    sampling: Sampling = _POISSON,
    method: AccountingMethod = AccountingMethod.PLD,
    discretization: float = DEFAULT_DISCRETIZATION,
    rel_tol: float = 1e-3,
) -> Calibration:
    """Noise multipliers per stage so prefix + plan composes to ε in [(1-rel_tol)ε, ε].

    Args:
        target_epsilon: total ε budget (prefix included).
        delta: the δ of the budget.
        sampling_rate: per-round sampling rate q of every planned round.
        stage_rounds: rounds per remaining stage (each >= 1).
        stage_weights: ρ-budget weight per stage (each > 0; normalised here).
        prefix: rounds already run, as :func:`~fedstrata.privacy.accounting.count_events`.
        sampling: cohort sampling scheme.
        method: the accountant that must certify the total.
        discretization: PLD discretisation interval.
        rel_tol: how far below the target the composed ε may land.

    Raises:
        ConfigError: inconsistent stages or out-of-range numbers.
        PrivacyBudgetExhausted: the prefix alone leaves no room for the plan.
    """
    _validate(target_epsilon, stage_rounds, stage_weights, rel_tol)
    total_w = math.fsum(stage_weights)
    weights = tuple(w / total_w for w in stage_weights)
    problem = _Problem(
        target_epsilon,
        delta,
        sampling_rate,
        stage_rounds,
        weights,
        prefix,
        sampling,
        method,
        discretization,
    )
    x, eps, evaluations = _search(problem, rel_tol)
    if eps < target_epsilon * (1.0 - rel_tol):
        logger.warning(
            "calibration landed at ε=%.6g, %.3g%% below the target %.6g",
            eps,
            100 * (1 - eps / target_epsilon),
            target_epsilon,
        )
    sigmas = _stage_sigmas(math.exp(x), stage_rounds, weights)
    return Calibration(sigmas, eps, math.exp(x), evaluations)


def _validate(
    target: float, rounds: tuple[int, ...], weights: tuple[float, ...], rel_tol: float
) -> None:
    if not (math.isfinite(target) and target > 0):
        raise ConfigError(f"target_epsilon must be a finite number > 0, got {target!r}")
    if not rounds or len(rounds) != len(weights):
        raise ConfigError(
            f"stage_rounds and stage_weights must be non-empty and of equal length, got "
            f"{len(rounds)} and {len(weights)}"
        )
    if any(n < 1 for n in rounds):
        raise ConfigError(f"stage_rounds must all be >= 1, got {rounds}")
    if any(not (math.isfinite(w) and w > 0) for w in weights):
        raise ConfigError(f"stage_weights must all be finite and > 0, got {weights}")
    if not 0 < rel_tol < 0.5:
        raise ConfigError(f"rel_tol must be in (0, 0.5), got {rel_tol!r}")
