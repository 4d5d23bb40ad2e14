"""DP-FTRL: tree-aggregated noise on the running sum of updates, no sampling.

Kairouz, McMahan, Song, Thakkar, Thakurta, Xu, "Practical and Private (Deep) Learning
without Sampling or Shuffling", ICML 2021 (the tree-restart variant, Appendix D); its
federated form is the DP-FTRL of Gboard's production models (Xu et al. 2023).

DP-FedAvg noises every round's sum afresh and needs Poisson sampling for its
amplification. DP-FTRL instead releases the noisy *prefix sums* ``S_t + n_t`` of the
clipped updates, where ``n_t`` is the sum of the Gaussian noises of the at most
``ceil(log2(t + 1))`` nodes of a binary tree whose dyadic intervals make up ``[1, t]``
(:func:`tree_nodes`). The server applies the increment ``(S_t + n_t) - (S_{t-1} +
n_{t-1})``, so the model is the initial one plus the noisy prefix sum: the noise does
not accumulate round after round inside a tree, only from tree to tree.

Cohorts (:class:`EpochOrder`): each epoch the clients are shuffled and the rounds take
consecutive blocks of ``clients_per_round``, so a client contributes at most once per
tree; the tree restarts every epoch (``floor(N / clients_per_round)`` rounds).

Accounting (:class:`TreeBudget`): dp-accounting's RDP of
``SingleEpochTreeAggregationDpEvent(σ, L)`` (one tree of ``L`` rounds, each client at
most once), composed over the epochs (the last one may be partial). dp-accounting
defines that event under the *replace-one-with-a-special-record* neighbouring relation
(a client's update replaced by zero), where DP-FedAvg's Poisson accounting uses
add-or-remove-one; Kairouz et al. discuss why the two are comparable for FL.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.context import RoundContext
from fedstrata.core.metrics import PrivacySpent
from fedstrata.core.params import FloatVector
from fedstrata.errors import ConfigError, PrivacyBudgetExhausted

__all__ = ["EpochOrder", "TreeBudget", "TreeDPHook", "TreeNoise", "tree_epsilon", "tree_nodes"]

log = logging.getLogger(__name__)

_NODE_KEY = 0x7EE5  # separates the tree's noise streams from every other seeded draw
_ORDER_KEY = 0x0DE7


def tree_nodes(t: int) -> list[tuple[int, int]]:
    """The tree nodes ``(level, index)`` whose dyadic intervals partition ``[1, t]``.

    One node per set bit of ``t``: at level ``l`` the node ``t >> l`` covers leaves
    ``((t >> l) - 1) 2^l + 1 .. (t >> l) 2^l``. ``t = 0`` has none.

    Raises:
        ConfigError: ``t`` is negative.
    """
    if t < 0:
        raise ConfigError(f"a tree's step must be >= 0, got {t}")
    return [(level, t >> level) for level in range(t.bit_length()) if t >> level & 1]


@dataclass(frozen=True)
class TreeNoise:
    """Noise of the prefix sums of one run: node ``(epoch, level, index)`` gets
    ``N(0, std^2)`` per coordinate, drawn from its own seeded stream (no state)."""

    size: int
    std: float
    root_seed: int

    def __post_init__(self) -> None:
        if self.size < 1 or not (math.isfinite(self.std) and self.std >= 0):
            raise ConfigError(f"TreeNoise needs size >= 1 and std >= 0, got {self}")

    def node(self, epoch: int, level: int, index: int) -> NDArray[np.float64]:
        """The noise of one node (the same every time it is asked for)."""
        seq = np.random.SeedSequence([self.root_seed, _NODE_KEY, epoch, level, index])
        return np.random.Generator(np.random.PCG64(seq)).standard_normal(self.size) * self.std

    def prefix(self, epoch: int, t: int) -> NDArray[np.float64]:
        """``n_t``: the noise on the sum of the first ``t`` rounds of ``epoch``'s tree."""
        out = np.zeros(self.size)
        for level, index in tree_nodes(t):
            out += self.node(epoch, level, index)
        return out


@dataclass(frozen=True)
class EpochOrder:
    """DP-FTRL's cohorts: a fresh shuffle of the clients each epoch, taken in blocks.

    Implements the coordinator's ``Selector``: round ``r`` is block ``r mod L`` of epoch
    ``r // L``'s shuffle, ``L = num_clients // per_round``; of it, the available clients
    (``fixed_blocks``: the coordinator asks it even when no more than ``per_round``
    clients are available, so a client outside the block never joins the round).
    """

    num_clients: int
    per_round: int
    root_seed: int
    fixed_blocks: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 1 <= self.per_round <= self.num_clients:
            raise ConfigError(
                f"DP-FTRL needs 1 <= clients_per_round <= num_clients, got {self.per_round} "
                f"of {self.num_clients}"
            )

    @property
    def rounds_per_epoch(self) -> int:
        return self.num_clients // self.per_round

    def block(self, round_idx: int) -> NDArray[np.int64]:
        """The clients of ``round_idx`` before availability (sorted)."""
        epoch, j = divmod(round_idx, self.rounds_per_epoch)
        seq = np.random.SeedSequence([self.root_seed, _ORDER_KEY, epoch])
        order = np.random.Generator(np.random.PCG64(seq)).permutation(self.num_clients)
        return np.sort(order[j * self.per_round : (j + 1) * self.per_round]).astype(np.int64)

    def select(
        self, round_idx: int, available: NDArray[np.int64], k: int, rng: np.random.Generator
    ) -> NDArray[np.int64]:
        """The round's block, less the clients that are not available."""
        block = self.block(round_idx)
        return block[np.isin(block, available)]


def tree_epsilon(
    noise_multiplier: float, rounds: int, rounds_per_epoch: int, delta: float
) -> float:
    """ε after ``rounds`` rounds of trees restarted every ``rounds_per_epoch`` rounds."""
    import dp_accounting as dpa
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    if rounds == 0:
        return 0.0
    accountant = rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_SPECIAL)
    full, rest = divmod(rounds, rounds_per_epoch)
    if full:
        tree = dpa.SingleEpochTreeAggregationDpEvent(noise_multiplier, rounds_per_epoch)
        accountant.compose(tree, full)
    if rest:
        accountant.compose(dpa.SingleEpochTreeAggregationDpEvent(noise_multiplier, rest))
    return float(accountant.get_epsilon(delta))


@dataclass
class TreeBudget:
    """The (ε, δ) budget of DP-FTRL: σ calibrated for the planned rounds (bisection on
    :func:`tree_epsilon`, which falls as σ grows), ε spent after each round."""

    epsilon: float
    delta: float
    planned_rounds: int
    rounds_per_epoch: int
    rel_tol: float = 1e-3
    rounds: int = 0
    noise_multiplier: float = field(init=False)

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and 0 < self.delta < 1):
            raise ConfigError(
                f"need epsilon > 0 and 0 < delta < 1, got {self.epsilon}, {self.delta}"
            )
        if self.planned_rounds < 1 or self.rounds_per_epoch < 1:
            raise ConfigError("planned_rounds and rounds_per_epoch must be >= 1")
        self.noise_multiplier = self._calibrate()

    def epsilon_after(self, rounds: int) -> float:
        return tree_epsilon(self.noise_multiplier, rounds, self.rounds_per_epoch, self.delta)

    def _eps(self, sigma: float) -> float:
        return tree_epsilon(sigma, self.planned_rounds, self.rounds_per_epoch, self.delta)

    def _calibrate(self) -> float:
        low, high = 1e-2, 1.0
        while self._eps(high) > self.epsilon:
            low, high = high, high * 2
            if high > 1e6:
                raise ConfigError(f"no noise multiplier reaches epsilon={self.epsilon}")
        while high / low > 1 + self.rel_tol:
            mid = math.sqrt(low * high)
            low, high = (mid, high) if self._eps(mid) > self.epsilon else (low, mid)
        return high  # the side that stays within the budget


@dataclass(eq=False)
class TreeDPHook:
    """DP-FTRL as the server's round hook (see the module docstring).

    Attributes:
        budget: σ and ε spent.
        noise: the tree's noise, ``std = σ C``.
        per_round: clients per round, the fixed denominator of the noisy mean.
        sampling_rate: ``per_round / N``, reported (no amplification is claimed).
    """

    budget: TreeBudget
    noise: TreeNoise
    per_round: int
    sampling_rate: float

    @property
    def applies_every_round(self) -> bool:
        """Always: the tree's increments must all be applied."""
        return True

    def start(self, round_idx: int) -> None:
        """Raises: PrivacyBudgetExhausted: this round would exceed the budget."""
        if round_idx != self.budget.rounds:
            raise ConfigError(f"DP-FTRL rounds run in order: expected {self.budget.rounds}")
        spent = self.budget.epsilon_after(round_idx + 1)
        if spent > self.budget.epsilon * (1 + 1e-9):
            raise PrivacyBudgetExhausted(
                f"round {round_idx} would spend epsilon {spent:.4f} > {self.budget.epsilon}"
            )

    def aggregate(self, mean: FloatVector, accepted: int, ctx: RoundContext) -> FloatVector:
        """The noisy increment of the prefix sum, divided by ``per_round``."""
        epoch, j = divmod(ctx.round_idx, self.budget.rounds_per_epoch)
        total = mean.astype(np.float64) * accepted
        total += self.noise.prefix(epoch, j + 1) - self.noise.prefix(epoch, j)
        return (total / self.per_round).astype(np.float32)

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> PrivacySpent:
        self.budget.rounds = round_idx + 1
        spent = self.budget.epsilon_after(self.budget.rounds)
        return PrivacySpent(
            epsilon_spent=spent,
            epsilon_remaining=self.budget.epsilon - spent,
            noise_multiplier=self.budget.noise_multiplier,
            sampling_rate=self.sampling_rate,
            tree_step=round_idx % self.budget.rounds_per_epoch + 1,
        )
