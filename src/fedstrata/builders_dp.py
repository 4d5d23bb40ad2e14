"""Builders of the central-DP methods beyond DP-FedAvg, shared by both drivers.

``privacy.adaptive_clip`` (Andrew et al. 2021): the clients clip to a ceiling, the
server clips each decoded update to a norm that tracks a quantile of the update norms
(:mod:`fedstrata.privacy.adaptive_server`). ``privacy.tree_aggregation`` (DP-FTRL,
Kairouz et al. 2021): :mod:`fedstrata.privacy.ftrl`. Which drivers run them is declared
in :mod:`fedstrata.config.compat` (the simulator's flat driver; others refuse them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedstrata.aggregation.clipped import ClipDecoded
from fedstrata.config import FedConfig
from fedstrata.config.features import PrivacyConfig
from fedstrata.errors import ConfigError
from fedstrata.pipeline import Codec

if TYPE_CHECKING:
    from fedstrata.coordinator.machine import Selector
    from fedstrata.privacy.adaptive_server import AdaptiveServerClip
    from fedstrata.privacy.ftrl import EpochOrder, TreeDPHook

__all__ = [
    "CEILING_FACTOR",
    "adaptive_server_clip",
    "client_clip_norm",
    "cohort_selector",
    "epoch_order",
    "tree_hook",
]

CEILING_FACTOR = 10.0
"""Adaptive clipping's default ceiling: ``clip_norm_max = 10 x clip_norm``."""


def client_clip_norm(p: PrivacyConfig) -> float:
    """The norm the clients clip to: ``clip_norm``, or the ceiling under adaptive clipping."""
    if not p.adaptive_clip:
        return p.clip_norm
    return p.clip_norm_max if p.clip_norm_max is not None else CEILING_FACTOR * p.clip_norm


def adaptive_server_clip(
    config: FedConfig, codec: Codec, expected_cohort: float, max_noise_multiplier: float
) -> AdaptiveServerClip | None:
    """The server half of ``privacy.adaptive_clip`` on the pipeline's codec, or None.

    ``max_noise_multiplier``: the largest ``z`` the budget plans (the count's noise must
    leave budget for the updates at every stage).

    Raises:
        ConfigError: the codec does not clip decoded updates (it must be ClipDecoded),
            or ``privacy.clip_count_noise`` is too small for the planned noise.
    """
    p = config.privacy
    if not p.adaptive_clip:
        return None
    from fedstrata.privacy import AdaptiveClip
    from fedstrata.privacy.adaptive_server import AdaptiveServerClip, default_count_noise

    if not isinstance(codec, ClipDecoded):
        raise ConfigError("privacy.adaptive_clip needs the server clip of decoded updates")
    count_noise = p.clip_count_noise or default_count_noise(expected_cohort, max_noise_multiplier)
    clip = AdaptiveClip(p.clip_norm, p.clip_quantile, p.clip_lr, count_noise)
    server = AdaptiveServerClip(clip, codec, expected_cohort, client_clip_norm(p))
    server.noise_multiplier(max_noise_multiplier)  # refuse a count noise that is too small
    return server


def epoch_order(config: FedConfig, num_clients: int) -> EpochOrder | None:
    """DP-FTRL's cohorts (a shuffle per epoch, taken in blocks), or None without it."""
    if not config.privacy.tree_aggregation:
        return None
    from fedstrata.privacy.ftrl import EpochOrder

    per_round = config.rounds.clients_per_round or num_clients
    return EpochOrder(num_clients, min(per_round, num_clients), config.seed)


def cohort_selector(
    config: FedConfig, num_clients: int, other: Selector | None = None
) -> Selector | None:
    """The selector of a flat round's cohort, for both drivers: DP-FTRL's epoch order
    (its accountant counts each client at most once per tree, so no other selector may
    pick), else ``other`` (a scheduler's; None: the coordinator's uniform draw)."""
    order = epoch_order(config, num_clients)
    return other if order is None else order


def tree_hook(config: FedConfig, num_clients: int, size: int | None) -> TreeDPHook:
    """DP-FTRL's round hook: the budget calibrated for the planned rounds, the tree's
    noise of std ``σ clip_norm``.

    Raises:
        ConfigError: the model's size is not known.
    """
    from fedstrata.privacy.ftrl import TreeBudget, TreeDPHook, TreeNoise

    order = epoch_order(config, num_clients)
    if order is None or size is None:
        raise ConfigError("privacy.tree_aggregation needs its epoch order and the model size")
    p = config.privacy
    planned = p.planned_rounds or config.rounds.rounds
    budget = TreeBudget(p.epsilon, p.delta, planned, order.rounds_per_epoch)
    noise = TreeNoise(size, budget.noise_multiplier * p.clip_norm, config.seed)
    return TreeDPHook(budget, noise, order.per_round, order.per_round / num_clients)
