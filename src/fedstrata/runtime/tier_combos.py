"""What aggregator tiers add to a round's rules, shared by the center and its edges.

* **Legacy tiers** (aggregator tiers without a ``topology`` section): every connected
  client of a tier trains in every round its parent runs; nothing draws a cohort over
  the whole federation, so ``rounds.clients_per_round`` would be accepted and ignored.
  :func:`check_legacy_tiers` refuses it, naming the setting and the way to sampling
  below the tiers (a ``topology`` section, whose cohort is drawn once for the tree as
  the simulator draws it, :mod:`fedstrata.runtime.tier_periods`).
"""

from __future__ import annotations

from fedstrata.config import FedConfig
from fedstrata.errors import ConfigError

__all__ = ["check_legacy_tiers"]


def check_legacy_tiers(config: FedConfig) -> None:
    """Refuse what aggregator tiers without a ``topology`` section would ignore.

    Raises:
        ConfigError: ``rounds.clients_per_round`` is set.
    """
    if config.topology.mode != "flat" or config.rounds.clients_per_round is None:
        return
    raise ConfigError(
        f"rounds.clients_per_round={config.rounds.clients_per_round} with aggregator tiers "
        "and no topology section: each tier trains every client connected to it, so no "
        "cohort is drawn over the federation; write the tree as topology.mode: explicit "
        "with topology.edges (edge -> client ids), whose cohort is drawn once for the "
        "whole tree as in the simulator, or set rounds.clients_per_round: null "
        '(docs/runtime.md, "Tiers")'
    )
