"""Secure-aggregation configuration and the SecAgg+ parameter formula.

The neighbour graph and threshold follow SecAgg+ (Bell, Bonawitz, Gascón, Lepoint,
Raykova, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead",
CCS 2020): every client masks with ``degree`` neighbours of a randomly labelled
Harary graph instead of with all ``n - 1`` other clients (Bonawitz et al., CCS 2017).

:func:`derive_parameters` picks the smallest even degree ``k`` (at least
``2 * ceil(log2 n)``) such that, with dropout rate ``d``, corrupt-client rate ``g``,
statistical security ``sigma`` and correctness target ``rho``:

1. **Corrupt neighbours.** ``c`` is the smallest count with
   ``n * P[Binomial(k, g) > c] <= 2^-sigma`` (``c = 0`` when ``g = 0``).
2. **Threshold.** ``t = floor((k + c) / 2) + 1``: two disjoint sets of ``t`` share
   holders cannot exist among ``k`` neighbours, so a server cannot collect both a
   client's self-mask seed and its mask key from different holders.
3. **Privacy (connectivity).** A randomly labelled Harary graph splits only when
   ``k / 2`` ring-consecutive clients all drop or are corrupt, so require
   ``log2(n) + (k / 2) * log2(d + g) <= -sigma``. The server then learns only the
   sum over all survivors, never a partial sum.
4. **Correctness.** Every client keeps ``t`` live share holders:
   ``n * P[Binomial(k, 1 - d) < t] <= 2^-rho``.

When no ``k < n - 1`` satisfies all four, the full graph (``k = n - 1``,
Bonawitz 2017) is returned with the same threshold rule.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from fedstrata.errors import ConfigError

__all__ = [
    "GraphParameters",
    "SecAggConfig",
    "check_ring_capacity",
    "derive_parameters",
]

logger = logging.getLogger(__name__)


def check_ring_capacity(num_clients: int, input_bits: int, modulus_bits: int) -> None:
    """Check that the sum of ``num_clients`` inputs cannot wrap around the ring.

    Unsigned inputs below ``2**input_bits`` (or signed two's-complement inputs with
    ``|x| < 2**(input_bits - 1)``) sum without overflow when
    ``num_clients * 2**input_bits <= 2**modulus_bits``.

    Raises:
        ConfigError: the bound does not hold; the message gives the largest
            admissible ``input_bits``.
    """
    if input_bits < 1:
        raise ConfigError(f"input_bits must be >= 1, got {input_bits}")
    if num_clients * (1 << input_bits) > (1 << modulus_bits):
        room = modulus_bits - math.ceil(math.log2(num_clients))
        raise ConfigError(
            f"ring overflow: {num_clients} clients x {input_bits}-bit inputs can exceed "
            f"the 2^{modulus_bits} ring (rule: num_clients * 2^input_bits <= "
            f"2^modulus_bits); use input_bits <= {room} or a larger modulus"
        )


@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one secure-aggregation round.

    Attributes:
        num_clients: cohort size ``n``; client ids are ``0 .. n - 1``.
        vector_length: elements per input vector (uint32 ring elements).
        threshold: Shamir threshold ``t``: shares needed to rebuild a secret.
        degree: neighbours per client; ``num_clients - 1`` is the full graph,
            otherwise an even number (randomly labelled Harary graph).
        modulus_bits: the ring is ``Z / 2^modulus_bits``; at most 32.
        input_bits: bit width of each client's input, if known; checked against
            the ring with :func:`check_ring_capacity`.
        precompute_masks: expand masks when keys are shared (mask pool), so the
            masked-input step only adds.
    """

    num_clients: int
    vector_length: int
    threshold: int
    degree: int
    modulus_bits: int = 32
    input_bits: int | None = None
    precompute_masks: bool = False

    def __post_init__(self) -> None:
        n = self.num_clients
        if n < 2:
            raise ConfigError(f"SecAggConfig.num_clients must be >= 2, got {n}")
        if self.vector_length < 1:
            raise ConfigError(f"SecAggConfig.vector_length must be >= 1, got {self.vector_length}")
        if not 1 <= self.modulus_bits <= 32:
            raise ConfigError(
                f"SecAggConfig.modulus_bits must be in [1, 32], got {self.modulus_bits}"
            )
        if not 1 <= self.degree <= n - 1:
            raise ConfigError(f"SecAggConfig.degree must be in [1, {n - 1}], got {self.degree}")
        if self.degree < n - 1 and self.degree % 2:
            raise ConfigError(
                f"SecAggConfig.degree must be even for a sparse (Harary) graph, got {self.degree}"
            )
        if not 1 <= self.threshold <= self.degree:
            raise ConfigError(
                f"SecAggConfig.threshold must be in [1, degree={self.degree}], "
                f"got {self.threshold}"
            )
        if self.input_bits is not None:
            check_ring_capacity(n, self.input_bits, self.modulus_bits)

    @property
    def full_graph(self) -> bool:
        """Whether every client is a neighbour of every other (Bonawitz 2017)."""
        return self.degree == self.num_clients - 1

    @classmethod
    def for_cohort(
        cls,
        num_clients: int,
        vector_length: int,
        dropout_rate: float = 0.1,
        *,
        security_bits: int = 40,
        corrupt_rate: float = 0.0,
        sparse: bool = True,
        modulus_bits: int = 32,
        input_bits: int | None = None,
        precompute_masks: bool = False,
    ) -> SecAggConfig:
        """A config whose degree and threshold come from :func:`derive_parameters`.

        With ``sparse=False`` the full graph is used with the same threshold rule.

        Raises:
            ConfigError: an argument is out of range.
        """
        params = derive_parameters(num_clients, dropout_rate, security_bits, corrupt_rate)
        degree, threshold = params.degree, params.threshold
        if not sparse:
            degree = num_clients - 1
            threshold = _threshold(
                degree, _corrupt_bound(num_clients, degree, corrupt_rate, security_bits)
            )
        return cls(
            num_clients=num_clients,
            vector_length=vector_length,
            threshold=threshold,
            degree=degree,
            modulus_bits=modulus_bits,
            input_bits=input_bits,
            precompute_masks=precompute_masks,
        )


@dataclass(frozen=True)
class GraphParameters:
    """Output of :func:`derive_parameters`.

    Attributes:
        degree: neighbours per client (``n - 1`` means the full graph).
        threshold: Shamir threshold.
        disconnect_log2: log2 of the bound on the probability that the surviving
            honest graph splits (privacy failure).
        failure_log2: log2 of the bound on the probability that some client keeps
            fewer than ``threshold`` live share holders (round failure).
        meets_targets: whether both bounds reach the requested targets.
    """

    degree: int
    threshold: int
    disconnect_log2: float
    failure_log2: float
    meets_targets: bool


def _log2_binom_tail_ge(k: int, p: float, lo: int) -> float:
    """log2 P[Binomial(k, p) >= lo], computed in log space."""
    if lo <= 0:
        return 0.0
    if lo > k or p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 0.0
    terms = [
        math.lgamma(k + 1)
        - math.lgamma(i + 1)
        - math.lgamma(k - i + 1)
        + i * math.log(p)
        + (k - i) * math.log1p(-p)
        for i in range(lo, k + 1)
    ]
    top = max(terms)
    return (top + math.log(sum(math.exp(x - top) for x in terms))) / math.log(2)


def _corrupt_bound(n: int, k: int, corrupt_rate: float, security_bits: int) -> int:
    c = 0
    while c < k and math.log2(n) + _log2_binom_tail_ge(k, corrupt_rate, c + 1) > -security_bits:
        c += 1
    return c


def _threshold(k: int, corrupt: int) -> int:
    return min(k, (k + corrupt) // 2 + 1)


def _evaluate(
    n: int, k: int, rates: tuple[float, float], targets: tuple[int, int]
) -> GraphParameters:
    dropout, corrupt_rate = rates
    security_bits, correctness_bits = targets
    t = _threshold(k, _corrupt_bound(n, k, corrupt_rate, security_bits))
    lost = dropout + corrupt_rate
    if k == n - 1:
        disconnect = -math.inf
    else:
        disconnect = math.log2(n) + (k / 2) * math.log2(lost) if lost > 0 else -math.inf
    # P[live holders < t] = P[dropped holders >= k - t + 1]
    failure = math.log2(n) + _log2_binom_tail_ge(k, dropout, k - t + 1)
    meets = disconnect <= -security_bits and failure <= -correctness_bits
    return GraphParameters(k, t, disconnect, failure, meets)


def derive_parameters(
    num_clients: int,
    dropout_rate: float,
    security_bits: int = 40,
    corrupt_rate: float = 0.0,
    correctness_bits: int = 20,
) -> GraphParameters:
    """Degree and threshold for a SecAgg+ round (formula in the module docstring).

    Args:
        num_clients: cohort size ``n``.
        dropout_rate: planned fraction of clients that drop (an upper bound).
        security_bits: statistical security ``sigma`` against partial sums leaking.
        corrupt_rate: fraction of clients that may collude with the server.
        correctness_bits: target ``rho`` for the round-failure probability.

    Raises:
        ConfigError: an argument is out of range.
    """
    if num_clients < 2:
        raise ConfigError(f"num_clients must be >= 2, got {num_clients}")
    for name, rate in (("dropout_rate", dropout_rate), ("corrupt_rate", corrupt_rate)):
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {rate}")
    if dropout_rate + corrupt_rate >= 0.5:
        raise ConfigError(
            f"dropout_rate + corrupt_rate must be < 0.5 (threshold > degree/2), "
            f"got {dropout_rate} + {corrupt_rate}"
        )
    if security_bits < 1 or correctness_bits < 1:
        raise ConfigError(
            f"security_bits and correctness_bits must be >= 1, got "
            f"{security_bits} and {correctness_bits}"
        )
    rates, targets = (dropout_rate, corrupt_rate), (security_bits, correctness_bits)
    k_min = max(2, 2 * math.ceil(math.log2(num_clients)))
    for k in range(k_min, num_clients - 1, 2):
        params = _evaluate(num_clients, k, rates, targets)
        if params.meets_targets:
            return params
    params = _evaluate(num_clients, num_clients - 1, rates, targets)
    if not params.meets_targets:
        logger.warning("secagg: %s", correctness_advice(num_clients, params, rates, targets))
    return params


def _full_graph_meets(n: int, rates: tuple[float, float], targets: tuple[int, int]) -> bool:
    return _evaluate(n, n - 1, rates, targets).failure_log2 <= -targets[1]


def _smallest_cohort(n: int, rates: tuple[float, float], targets: tuple[int, int]) -> int | None:
    for m in range(n + 1, 8 * n + 64):
        if _full_graph_meets(m, rates, targets):
            return m
    return None


def _largest_dropout(n: int, rates: tuple[float, float], targets: tuple[int, int]) -> float:
    lo, hi = 0.0, rates[0]
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _full_graph_meets(n, (mid, rates[1]), targets) else (lo, mid)
    return lo


def correctness_advice(
    n: int, params: GraphParameters, rates: tuple[float, float], targets: tuple[int, int]
) -> str:
    """Why a full graph of ``n`` clients misses the correctness target, and what to change.

    The threshold cannot be lowered without weakening privacy (two disjoint sets
    of holders), so the remedies are a larger cohort or, when real dropouts are
    rarer than planned, a lower planned dropout rate.
    """
    dropout, _ = rates
    odds = 2.0**-params.failure_log2
    chance = f"about 1 in {odds:,.0f}" if odds >= 2 else "likely"
    cohort = _smallest_cohort(n, rates, targets)
    grow = f"a cohort of at least {cohort} clients" if cohort else "a larger cohort"
    rate = _largest_dropout(n, rates, targets)
    lower = f"plan dropout_rate <= {rate:.3f}" if rate > 0 else "plan a lower dropout_rate"
    return (
        f"full graph for n={n} at planned dropout {dropout:.0%} misses the correctness "
        f"target: a round fails with probability up to 2^{params.failure_log2:.1f} "
        f"({chance}; target 2^-{targets[1]}) because some client may keep fewer than "
        f"threshold={params.threshold} of its {params.degree} share holders. To meet it "
        f"use {grow} (rounds.clients_per_round) or, if real dropouts are rarer, {lower} "
        "(secagg.dropout_rate); the threshold cannot be lowered without weakening "
        "privacy. Safe to ignore when an occasional failed round is acceptable: the "
        "round fails with SecAggError, refused before any share is revealed when too "
        "few clients sent their masked input"
    )
