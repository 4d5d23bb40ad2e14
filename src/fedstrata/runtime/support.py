"""What the deployment runtime runs and refuses (issue 12 part 3).

:func:`check_supported` refuses a configuration whose features the runtime does not
carry, each with its reason (the runtime's set is
:data:`fedstrata.config.compat.RUNTIME`, declared beside the simulator's;
docs/compatibility.md); :func:`check_tiers` refuses what aggregator tiers cannot run,
:func:`buffered_refusal` what the runtime's FedBuff cannot.
Both only read the configuration: they build nothing.
"""

from __future__ import annotations

from fedstrata.config import FedConfig
from fedstrata.config.compat import RUNTIME, driver_for, refusal
from fedstrata.config.failover import runtime_refusal
from fedstrata.errors import ConfigError
from fedstrata.runtime.tier_periods import tree_refusal

__all__ = ["buffered_refusal", "check_supported", "check_tiers"]


def check_tiers(cfg: FedConfig) -> None:
    """Refuse what aggregator tiers cannot run (a reason each).

    Raises:
        ConfigError: central DP on tiers without a topology section (its Poisson
            cohort is drawn over the federation, which such tiers do not do), or DP
            without secure aggregation on them.
    """
    p = cfg.privacy
    legacy = cfg.topology.mode == "flat"  # a topology's tiers report their clients
    if p.enabled and legacy and (p.mechanism == "central" or not cfg.secagg.enabled):
        raise ConfigError(
            f"privacy.mechanism={p.mechanism!r} with aggregator tiers and no topology "
            "section is not run by the deployment runtime: central DP samples a Poisson "
            "cohort over the federation, which such tiers do not draw; write the tree as "
            "a topology section (topology.mode: explicit), use privacy.mechanism="
            "distributed with secagg.enabled, or connect the clients to the center"
        )


def check_supported(config: FedConfig) -> None:
    """Refuse features the runtime does not carry (issue 12 part 3).

    The runtime's supported set is :data:`fedstrata.config.compat.RUNTIME`, checked by
    the same declaration as the simulator's (docs/compatibility.md); sections the
    runtime does not read (``scheduling``, ``topology``, ...) are refused, never ignored.

    Raises:
        ConfigError: a feature the runtime does not run is enabled; the message names
            its setting, its docs page and the reason.
    """
    why = refusal(config, RUNTIME) or runtime_refusal(config) or tree_refusal(config)
    if why is None and config.scheduling.async_.enabled:
        why = buffered_refusal(config)
    if why is None and config.scheduling.replay_url is not None:
        why = (
            "scheduling.replay_url (docs/scheduling.md) replays a deployment's recorded "
            "allocations in the simulator; a deployment allocates from its own timings "
            "(leave scheduling.replay_url unset for the runtime)"
        )
    if why is not None:
        raise ConfigError(why)


def buffered_refusal(config: FedConfig) -> str | None:
    """Why the runtime cannot run ``config``'s FedBuff (None: it can): what the FedBuff
    simulator refuses (the runtime's FedBuff carries all the simulator's does)."""
    return refusal(config, driver_for(config))
