"""Client selection: a uniform baseline and Oort's guided participant selection.

Oort (Lai et al., "Oort: Efficient Federated Learning via Guided Participant
Selection", OSDI 2021) scores each explored client by

    util_i = stat_i + sqrt(0.1 * log(R) / L_i)            (staleness bonus)
    util_i *= (T / t_i) ** alpha   when t_i > T           (system speed penalty)

where ``stat_i = |B_i| * sqrt(mean_{k in B_i} loss_k^2)`` is the statistical utility
from the client's last round (normalised to [0, 1] over explored clients, as in the
FedScale reference code), ``R`` the current round, ``L_i`` the round the client was
last seen, ``t_i`` its round duration and ``T`` the preferred round duration. It
exploits a ``1 - epsilon`` share of the cohort, sampled by utility among the clients
above ``cutoff`` times the k-th best, and explores the rest among never-tried clients,
preferring faster ones. ``epsilon`` decays each round; the pacer relaxes ``T`` by
``pacer_step_s`` when the utility collected over the last window falls below the
window before.

Selectors take the round's ``numpy.random.Generator``; they hold no global RNG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import ConfigError, DataError

__all__ = ["OortConfig", "OortSelector", "OortState", "RandomSelector", "Selector"]

log = logging.getLogger(__name__)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


class Selector(Protocol):
    """Chooses a round's cohort and learns from what the cohort reported."""

    def select(self, round_idx: int, available: I64, k: int, rng: np.random.Generator) -> I64:
        """Up to ``k`` distinct ids out of ``available``, sorted."""
        ...

    def feedback(
        self,
        round_idx: int,
        client_ids: I64,
        *,
        num_samples: I64,
        mean_sq_loss: F64,
        duration_s: F64,
    ) -> None:
        """What the clients of ``round_idx`` did (NaN loss: no statistical report)."""
        ...


def _check_select(available: I64, k: int) -> I64:
    ids = np.asarray(available, dtype=np.int64)
    if k < 0:
        raise ConfigError(f"select k must be >= 0, got {k}")
    if ids.ndim != 1 or np.unique(ids).size != ids.size:
        raise DataError("select: available must be a 1-D array of distinct ids")
    return ids


class RandomSelector:
    """Uniform sampling without replacement (the FedAvg baseline)."""

    def select(self, round_idx: int, available: I64, k: int, rng: np.random.Generator) -> I64:
        """``min(k, len(available))`` ids drawn uniformly, sorted.

        Raises:
            ConfigError: ``k`` < 0.
            DataError: ``available`` is not a 1-D array of distinct ids.
        """
        ids = _check_select(available, k)
        if k >= ids.size:
            return np.sort(ids)
        return np.sort(rng.choice(ids, size=k, replace=False))

    def feedback(
        self,
        round_idx: int,
        client_ids: I64,
        *,
        num_samples: I64,
        mean_sq_loss: F64,
        duration_s: F64,
    ) -> None:
        """Ignored: uniform selection learns nothing."""


@dataclass(frozen=True)
class OortConfig:
    """Oort's hyper-parameters (defaults from the paper and FedScale).

    Attributes:
        epsilon: initial exploration share, in [0, 1].
        epsilon_decay: multiplier applied to epsilon after every selection, in (0, 1].
        epsilon_min: floor of epsilon, in [0, epsilon].
        alpha: exponent of the speed penalty, >= 0.
        cutoff: exploit pool holds clients >= cutoff x the k-th best utility, in (0, 1].
        preferred_duration_s: initial T; ``None`` takes ``duration_quantile`` of the
            durations seen so far.
        duration_quantile: quantile used for the initial T, in (0, 1].
        pacer_step_s: how much T grows when utility declines, >= 0.
        pacer_window: rounds per pacer window, >= 1.
    """

    epsilon: float = 0.9
    epsilon_decay: float = 0.98
    epsilon_min: float = 0.2
    alpha: float = 2.0
    cutoff: float = 0.95
    preferred_duration_s: float | None = None
    duration_quantile: float = 0.5
    pacer_step_s: float = 10.0
    pacer_window: int = 20

    def __post_init__(self) -> None:
        checks = [
            ("epsilon", 0 <= self.epsilon <= 1, "in [0, 1]"),
            ("epsilon_decay", 0 < self.epsilon_decay <= 1, "in (0, 1]"),
            ("epsilon_min", 0 <= self.epsilon_min <= self.epsilon, "in [0, epsilon]"),
            ("alpha", self.alpha >= 0, ">= 0"),
            ("cutoff", 0 < self.cutoff <= 1, "in (0, 1]"),
            ("duration_quantile", 0 < self.duration_quantile <= 1, "in (0, 1]"),
            ("pacer_step_s", self.pacer_step_s >= 0, ">= 0"),
            ("pacer_window", self.pacer_window >= 1, ">= 1"),
        ]
        t = self.preferred_duration_s
        checks.append(("preferred_duration_s", t is None or t > 0, "None or > 0"))
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"OortConfig.{name}={getattr(self, name)!r} must be {rule}")


@dataclass(frozen=True, eq=False)
class OortState:
    """Everything Oort knows, indexed by client id (``0 .. num_clients-1``).

    Attributes:
        stat_utility: last statistical utility (0 until reported).
        last_round: round the client last took part in, -1 if never (unexplored).
        duration_s: its last measured round duration (NaN if none).
        hint_s: predicted duration used to prefer fast clients when exploring (NaN).
        epsilon: current exploration share.
        preferred_s: current T (NaN until set).
        round_utility: total statistical utility collected per round, in order.
    """

    stat_utility: F64
    last_round: I64
    duration_s: F64
    hint_s: F64
    epsilon: float
    preferred_s: float
    round_utility: tuple[float, ...] = field(default=())

    @classmethod
    def initial(cls, num_clients: int, config: OortConfig) -> OortState:
        """A fresh state: every client unexplored."""
        t = config.preferred_duration_s
        return cls(
            np.zeros(num_clients),
            np.full(num_clients, -1, dtype=np.int64),
            np.full(num_clients, np.nan),
            np.full(num_clients, np.nan),
            config.epsilon,
            float("nan") if t is None else t,
        )


def oort_scores(state: OortState, ids: I64, round_idx: int, alpha: float) -> F64:
    """Oort utility of explored clients ``ids`` at ``round_idx`` (pure).

    Statistical utilities are min-max normalised over every explored client.
    """
    known = state.stat_utility[state.last_round >= 0]
    lo, hi = (float(known.min()), float(known.max())) if known.size else (0.0, 0.0)
    stat = state.stat_utility[ids]
    norm = (stat - lo) / (hi - lo) if hi > lo else np.ones_like(stat)
    seen = state.last_round[ids] + 1.0
    bonus = np.sqrt(0.1 * np.log(round_idx + 1.0) / seen)
    util = norm + bonus
    t, pref = state.duration_s[ids], state.preferred_s
    if np.isfinite(pref):
        slow = np.isfinite(t) & (t > pref)
        util = np.where(slow, util * (pref / np.where(slow, t, 1.0)) ** alpha, util)
    out: F64 = np.maximum(util, 1e-12)
    return out


class OortSelector:
    """Oort guided participant selection over clients ``0 .. num_clients-1``."""

    def __init__(self, num_clients: int, config: OortConfig | None = None) -> None:
        """Start with every client unexplored.

        Raises:
            ConfigError: ``num_clients`` < 1.
        """
        if num_clients < 1:
            raise ConfigError(f"OortSelector num_clients must be >= 1, got {num_clients}")
        self.config = config or OortConfig()
        self.state = OortState.initial(num_clients, self.config)

    def hint_durations(self, client_ids: I64, seconds: F64) -> None:
        """Predicted round durations, used to prefer fast clients when exploring."""
        self.state.hint_s[self._ids(client_ids)] = np.asarray(seconds, dtype=np.float64)

    def _ids(self, client_ids: I64) -> I64:
        ids = np.asarray(client_ids, dtype=np.int64)
        n = self.state.last_round.size
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise DataError(
                f"OortSelector: client ids must be in [0, {n}), got {ids.min()}..{ids.max()}"
            )
        return ids

    def select(self, round_idx: int, available: I64, k: int, rng: np.random.Generator) -> I64:
        """Exploit by utility, explore fast unexplored clients; sorted ids.

        Raises:
            ConfigError: ``k`` < 0.
            DataError: ids out of range or repeated.
        """
        ids = self._ids(_check_select(available, k))
        if k >= ids.size:
            chosen = ids
        else:
            self._pace(round_idx)
            explored = ids[self.state.last_round[ids] >= 0]
            fresh = ids[self.state.last_round[ids] < 0]
            n_explore = min(round(self.state.epsilon * k), fresh.size)
            n_explore = max(n_explore, k - explored.size)
            chosen = np.concatenate(
                [
                    self._exploit(explored, k - n_explore, round_idx, rng),
                    self._explore(fresh, n_explore, rng),
                ]
            )
        self.state = replace(
            self.state,
            epsilon=max(self.config.epsilon_min, self.state.epsilon * self.config.epsilon_decay),
        )
        return np.sort(chosen)

    def _exploit(self, explored: I64, n: int, round_idx: int, rng: np.random.Generator) -> I64:
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        util = oort_scores(self.state, explored, round_idx, self.config.alpha)
        kth = np.sort(util)[::-1][n - 1]
        pool = np.flatnonzero(util >= self.config.cutoff * kth)
        p = util[pool] / util[pool].sum()
        picked: I64 = explored[rng.choice(pool, size=n, replace=False, p=p)]
        return picked

    def _explore(self, fresh: I64, n: int, rng: np.random.Generator) -> I64:
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        hint = self.state.hint_s[fresh]
        if np.isfinite(hint).all() and (hint > 0).all():
            p = (1.0 / hint) / (1.0 / hint).sum()
            return rng.choice(fresh, size=n, replace=False, p=p)
        return rng.choice(fresh, size=n, replace=False)

    def _pace(self, round_idx: int) -> None:
        s, c = self.state, self.config
        if not np.isfinite(s.preferred_s):
            known = s.duration_s[np.isfinite(s.duration_s)]
            if known.size:
                t = float(np.quantile(known, c.duration_quantile))
                self.state = replace(s, preferred_s=t)
            return
        w, hist = c.pacer_window, s.round_utility
        if len(hist) >= 2 * w and round_idx % w == 0 and sum(hist[-w:]) < sum(hist[-2 * w : -w]):
            self.state = replace(s, preferred_s=s.preferred_s + c.pacer_step_s)
            log.info("round %d: Oort pacer relaxes T to %.3g s", round_idx, self.state.preferred_s)

    def feedback(
        self,
        round_idx: int,
        client_ids: I64,
        *,
        num_samples: I64,
        mean_sq_loss: F64,
        duration_s: F64,
    ) -> None:
        """Record each client's statistical utility, duration and round.

        ``mean_sq_loss`` is the mean of the squared per-example losses; pass the
        squared mean loss when only that is known, and NaN for clients that reported
        nothing (dropped): they keep their old utility but their duration counts.

        Raises:
            DataError: ids out of range or arrays of different lengths.
        """
        ids = self._ids(client_ids)
        samples = np.asarray(num_samples, dtype=np.float64)
        sq = np.asarray(mean_sq_loss, dtype=np.float64)
        dur = np.asarray(duration_s, dtype=np.float64)
        if not samples.shape == sq.shape == dur.shape == ids.shape:
            raise DataError(
                "OortSelector.feedback: client_ids, num_samples, mean_sq_loss "
                "and duration_s must have the same length"
            )
        s = self.state
        ok = np.isfinite(sq)
        util = samples[ok] * np.sqrt(np.maximum(sq[ok], 0.0))
        s.stat_utility[ids[ok]] = util
        s.last_round[ids] = round_idx
        s.duration_s[ids] = dur
        self.state = replace(s, round_utility=(*s.round_utility, float(util.sum())))
