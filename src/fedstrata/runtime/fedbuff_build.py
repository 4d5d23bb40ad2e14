"""Build the runtime's FedBuff center from a :class:`~fedstrata.config.FedConfig`.

:func:`buffered_center` builds a :class:`~fedstrata.runtime.fedbuff.BufferedCenter`
(``scheduling.async``) as the simulator builds its FedBuff run: ``K``, the staleness
rules, the concurrency, the number of server steps, a robust rule over each step,
downlink compression per dispatched version and the device registry the clients'
profiles are written to. Importing it imports the registry's SQLAlchemy: callers defer
it to configurations that run FedBuff.
"""

from __future__ import annotations

from dataclasses import replace

from fedstrata.aggregation.mean import WeightedMean
from fedstrata.builders import aggregator, server_optimizer
from fedstrata.config import FedConfig
from fedstrata.coordinator import Buffering
from fedstrata.core.clock import Clock
from fedstrata.pipeline.stage import Codec
from fedstrata.runtime.downlink import DownlinkServer
from fedstrata.runtime.fedbuff import BufferedCenter
from fedstrata.runtime.fedbuff_downlink import VersionedDownlink
from fedstrata.runtime.fedbuff_registry import ProfileWriter
from fedstrata.runtime.records import CenterSettings
from fedstrata.scheduling import FedBuffConfig, FedBuffServer

__all__ = ["buffered_center"]


def buffered_center(
    config: FedConfig,
    settings: CenterSettings,
    *,
    num_clients: int,
    size: int,
    codec: Codec,
    clock: Clock | None,
    start_timeout_s: float | None,
) -> BufferedCenter:
    """The buffered center of ``config`` (``scheduling.async``), built as the simulator
    builds its FedBuff run (``fedstrata.api.scheduling.async_simulation``): ``K``,
    staleness rules, concurrency, server steps, a robust rule over each step, downlink
    compression per dispatched version and the device registry's profiles.

    Raises:
        RegistryError: ``scheduling.registry_url`` cannot be opened or migrated.
    """
    a = config.scheduling.async_
    per_round = config.rounds.clients_per_round or num_clients
    updates = a.server_updates or max(1, config.rounds.rounds * per_round // a.buffer_size)
    rules = FedBuffConfig(
        buffer_size=a.buffer_size,
        max_staleness=a.max_staleness,
        staleness_exponent=a.staleness_exponent,
    )
    agg = aggregator(config.server, config.project_dir)
    rule = None if isinstance(agg, WeightedMean) else agg
    d, url = config.downlink, config.scheduling.registry_url
    down = DownlinkServer(d.spec(), d.history) if d.enabled else None
    return BufferedCenter(
        replace(settings, start_timeout_s=start_timeout_s),
        buffering=Buffering(min(a.concurrency, num_clients), rules),
        server=FedBuffServer(size, rules, aggregator=rule),
        server_optimizer=server_optimizer(config.server, config.project_dir),
        codec=codec, server_updates=updates, clock=clock,
        downlink=None if down is None else VersionedDownlink(down, settings.root_seed),
        registry=None if url is None else ProfileWriter.open(url),
    )  # fmt: skip
