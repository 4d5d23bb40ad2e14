"""Build the heterogeneity-aware scheduler and the asynchronous simulation from config."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from fedstrata.aggregation.protocol import Aggregator
from fedstrata.config import FedConfig
from fedstrata.core.payload import HEADER_SIZE
from fedstrata.core.training import Trainer
from fedstrata.data import FederatedDataset
from fedstrata.scheduling import (
    FedBuffConfig,
    FedBuffServer,
    OortSelector,
    RandomSelector,
    Registry,
    TimePredictor,
    replay_history,
)
from fedstrata.sim import Executor, ProfileTable
from fedstrata.sim.async_engine import AsyncSettings, AsyncSimulation
from fedstrata.sim.scheduled import (
    ScheduledPlanner,
    ScheduledSelector,
    ScheduleSettings,
    SettlementWeighted,
    profile_table,
    registry_profiles,
)

__all__ = ["async_simulation", "open_registry", "registry_table", "scheduler"]


def open_registry(config: FedConfig, stack: ExitStack) -> Registry | None:
    """The device registry named by ``scheduling.registry_url`` (closed by ``stack``)."""
    url = config.scheduling.registry_url
    if url is None:
        return None
    return stack.enter_context(Registry.open(url))


def registry_table(registry: Registry | None, generated: ProfileTable) -> ProfileTable:
    """The registry's profiles when it holds the population, else ``generated``.

    A new registry is filled with the generated profiles, so the simulation and the
    registry are one source from then on.
    """
    if registry is None:
        return generated
    if registry.count_devices() >= len(generated):
        table = profile_table(registry.devices())
        if len(table) == len(generated):
            return table
    registry.upsert_devices(registry_profiles(generated))
    return generated


def scheduler(
    config: FedConfig,
    *,
    dataset: FederatedDataset,
    trainer: Trainer,
    profiles: ProfileTable,
    registry: Registry | None,
    aggregator: Aggregator[Any],
) -> tuple[ScheduledPlanner | None, ScheduledSelector | None, Aggregator[Any]]:
    """Planner, selector and (settlement-weighted) aggregator, or the inputs unchanged."""
    s = config.scheduling
    if not s.enabled:
        return None, None, aggregator
    regp = registry_profiles(profiles)
    predictor = TimePredictor.from_profiles(regp, trainer.flops_per_example)
    if registry is not None:
        replay_history(predictor, registry.history())
    inner = OortSelector(dataset.num_clients) if s.selector == "oort" else RandomSelector()
    nbytes = HEADER_SIZE + 4 * trainer.spec.size
    settings = ScheduleSettings(
        config.rounds.deadline_s, s.allocation, s.min_steps, s.max_steps, s.safety
    )
    planner = ScheduledPlanner(
        settings, predictor, regp, profiles, dataset.client_sizes(),
        flops_per_example=trainer.flops_per_example, down_bytes=nbytes, up_bytes=nbytes,
        registry=registry, selector=inner,
    )  # fmt: skip
    selector = ScheduledSelector(
        inner, planner, config.client.batch_size,
        overselect_rate=s.overselect, skip_infeasible=s.allocation and s.skip_infeasible,
    )  # fmt: skip
    return planner, selector, SettlementWeighted(aggregator, planner)


def async_simulation(
    config: FedConfig,
    *,
    dataset: FederatedDataset,
    trainer: Trainer,
    executor: Executor,
    profiles: ProfileTable,
    server_optimizer: Any,
    plan: Any,
) -> AsyncSimulation:
    """FedBuff on the virtual clock (``scheduling.async.enabled``)."""
    a = config.scheduling.async_
    per_round = config.rounds.clients_per_round or dataset.num_clients
    updates = a.server_updates or max(1, config.rounds.rounds * per_round // a.buffer_size)
    server = FedBuffServer(
        trainer.spec.size,
        FedBuffConfig(
            buffer_size=a.buffer_size,
            max_staleness=a.max_staleness,
            staleness_exponent=a.staleness_exponent,
        ),
    )
    settings = AsyncSettings(
        updates, min(a.concurrency, dataset.num_clients), plan, config.rounds.eval_every,
        config.seed,
    )  # fmt: skip
    return AsyncSimulation(
        settings, server, trainer, executor, dataset.client_sizes(), dataset.test, profiles,
        server_optimizer,
    )  # fmt: skip
