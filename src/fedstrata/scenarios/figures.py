"""The figures a scenario reads from a run's round records (pure functions).

Each takes the resolved configuration and the rounds of one arm and returns one
number, or None when the run does not show it (e.g. a target accuracy not reached):
a figure is never made up.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from fedstrata.config import FedConfig
from fedstrata.monitoring.catalogue import federation_metrics
from fedstrata.monitoring.events import RoundMetrics

__all__ = [
    "catalogue_mean",
    "cohort_delivery",
    "mean_round_s",
    "rounds_to_accuracy",
    "secagg_protocol_s",
    "throughput_eps",
    "time_to_accuracy",
    "useful_utilization",
]


def _finite_mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(kept) if kept else None


def catalogue_mean(key: str, rounds: Sequence[RoundMetrics]) -> float | None:
    """Mean over the rounds of one federation metric (:mod:`fedstrata.monitoring.catalogue`)."""
    return _finite_mean([row[key] for row in federation_metrics(rounds)])


def mean_round_s(rounds: Sequence[RoundMetrics]) -> float | None:
    """Mean simulated seconds per (center) round."""
    return _finite_mean([m.sim_round_s for m in rounds])


def secagg_protocol_s(rounds: Sequence[RoundMetrics]) -> float | None:
    """Mean seconds the secure-aggregation protocol took per round (all parties)."""
    return _finite_mean([m.secagg.protocol_s for m in rounds if m.secagg is not None])


def throughput_eps(rounds: Sequence[RoundMetrics]) -> float | None:
    """Mean examples trained per simulated second (the scheduler's figure)."""
    return _finite_mean([m.schedule.throughput_eps for m in rounds if m.schedule is not None])


def useful_utilization(rounds: Sequence[RoundMetrics]) -> float | None:
    """Mean share of the round devices spent on work that was aggregated.

    The scheduler's ``useful_utilization``: busy time on work that missed the deadline
    or was dropped does not count (the catalogue's ``device_utilization`` counts it).
    """
    return _finite_mean([m.schedule.useful_utilization for m in rounds if m.schedule is not None])


def cohort_delivery(config: FedConfig, rounds: Sequence[RoundMetrics]) -> float | None:
    """Mean share of each round's planned cohort whose update reached the aggregate.

    ``min(1, clients_completed / clients_per_round)``: over-selected extras beyond the
    planned cohort do not count twice.
    """
    k = config.rounds.clients_per_round or config.data.num_clients
    return _finite_mean([min(1.0, m.clients_completed / k) for m in rounds])


def _first_at(rounds: Sequence[RoundMetrics], target: float) -> RoundMetrics | None:
    return next((m for m in rounds if m.accuracy is not None and m.accuracy >= target), None)


def time_to_accuracy(rounds: Sequence[RoundMetrics], target: float) -> float | None:
    """Simulated seconds until the first evaluation at or above ``target``; None: never."""
    hit = _first_at(rounds, target)
    return None if hit is None else hit.sim_time_s


def rounds_to_accuracy(rounds: Sequence[RoundMetrics], target: float) -> float | None:
    """Rounds (1-based) until the first evaluation at or above ``target``; None: never."""
    hit = _first_at(rounds, target)
    return None if hit is None else float(hit.round_idx + 1)
