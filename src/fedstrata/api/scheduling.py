"""Build the heterogeneity-aware scheduler and the asynchronous simulation from config."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedstrata.aggregation import WeightedMean
from fedstrata.aggregation.protocol import Aggregator
from fedstrata.config import FedConfig
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import HEADER_SIZE
from fedstrata.core.training import ClientPopulation, Trainer
from fedstrata.errors import ConfigError
from fedstrata.pipeline import Pipeline
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
from fedstrata.sim.hooks import CompressedBroadcast
from fedstrata.sim.replay import replay_planner
from fedstrata.sim.scheduled import (
    ScheduledPlanner,
    ScheduledSelector,
    ScheduleSettings,
    SettlementWeighted,
    registry_profiles,
    with_registered,
)

__all__ = ["RegistryTable", "async_simulation", "open_registry", "registry_table", "scheduler"]

log = logging.getLogger(__name__)


def open_registry(config: FedConfig, stack: ExitStack) -> Registry | None:
    """The device registry named by ``scheduling.registry_url`` (closed by ``stack``)."""
    url = config.scheduling.registry_url
    if url is None:
        return None
    return stack.enter_context(Registry.open(url))


@dataclass(frozen=True, eq=False)
class RegistryTable:
    """The profiles a run uses and which of them came from the registry.

    Attributes:
        table: one profile per client.
        from_registry: ids of the clients whose profile the registry held.
    """

    table: ProfileTable
    from_registry: NDArray[np.int64]

    def summary(self) -> str:
        """E.g. ``"3 of 100 from the registry (ids 0, 1, 2), 97 generated"``."""
        ids, n = self.from_registry, len(self.table)
        shown = ", ".join(str(int(i)) for i in ids[:5]) + (", …" if ids.size > 5 else "")
        label = "id" if ids.size == 1 else "ids"
        which = f" ({label} {shown})" if 0 < ids.size < n else ""
        return f"{ids.size} of {n} from the registry{which}, {n - ids.size} generated"


def registry_table(registry: Registry | None, generated: ProfileTable) -> RegistryTable:
    """Registered profiles for the clients the registry holds, generated ones for the rest.

    Clients ``0..n-1`` are device ids ``0..n-1``. A registered device (e.g. measured by
    ``fedstrata device bench --register``) keeps its profile; the others are generated
    and added to the registry, so the simulation and the registry are one source from
    then on. Generated profiles never replace registered ones.

    Raises:
        RegistryError: the registry cannot be read or written.
    """
    if registry is None:
        return RegistryTable(generated, np.zeros(0, dtype=np.int64))
    rows = registry_profiles(generated)
    known = registry.registered(rows.device_id)
    fresh = np.setdiff1d(rows.device_id, known.device_id)
    registry.insert_devices(rows.take(fresh))
    out = RegistryTable(with_registered(generated, known), known.device_id)
    log.info("device profiles: %s", out.summary())
    return out


def scheduler(
    config: FedConfig,
    *,
    dataset: ClientPopulation,
    trainer: Trainer,
    profiles: ProfileTable,
    registry: Registry | None,
    aggregator: Aggregator[Any],
    deadline_s: float | None = None,
) -> tuple[ScheduledPlanner | None, ScheduledSelector | None, Aggregator[Any]]:
    """Planner, selector and (settlement-weighted) aggregator, or the inputs unchanged.

    Under central DP the planner still allocates work and cuts it at the deadline,
    but there is no selector (the cohort is the accountant's Poisson sample; with
    ``skip_infeasible`` the planner's ``admit`` leaves the devices predicted to miss
    the deadline out of the available clients before that draw) and the
    aggregator keeps fixed weights of 1: a partial update counts like a full one, so
    each accepted update adds at most ``clip_norm`` to the noised sum and the
    sensitivity, the rate ``q`` and ε are those of the run without scheduling. (Work
    weights ``done / assigned`` would have to pass through the hook's fixed
    denominator ``q N`` to stay bounded; the uniform rule is the one documented in
    docs/privacy.md.)

    ``deadline_s``: what the planner sizes work to (default: ``rounds.deadline_s``; a
    tree passes less, for the model's way down to the edges).
    """
    s = config.scheduling
    if not s.enabled:
        return None, None, aggregator
    regp = registry_profiles(profiles)
    predictor = TimePredictor.from_profiles(
        regp, trainer.flops_per_example, precision=profiles.precision
    )
    if registry is not None:
        replay_history(predictor, registry.history())
    inner = OortSelector(dataset.num_clients) if s.selector == "oort" else RandomSelector()
    nbytes = HEADER_SIZE + 4 * trainer.spec.size
    skip = s.allocation and s.skip_infeasible
    poisson = config.privacy.enabled and not config.secagg.enabled  # no selector picks it
    # the planner's admit leaves infeasible devices out before any draw: under central
    # DP (no selector), and in a flat run, where the coordinator invites every
    # available client without a selector when the cohort is all of them (a tree's
    # network is not the planner's link model yet: its selector does the skipping)
    admits = skip and (poisson or config.topology.mode == "flat")
    settings = ScheduleSettings(
        deadline_s or config.rounds.deadline_s, s.allocation, s.min_steps, s.max_steps, s.safety,
        min_fraction=s.min_fraction, stop_at_deadline=s.stragglers == "partial",
        skip_infeasible=admits, batch_size=config.client.batch_size,
    )  # fmt: skip
    planner: ScheduledPlanner
    if s.replay_url is not None:  # the deployment's recorded decisions, not a prediction
        planner = replay_planner(
            s.replay_url, settings, predictor, regp, profiles,
            client_sizes=dataset.client_sizes(), flops_per_example=trainer.flops_per_example,
            nbytes=nbytes,
        )  # fmt: skip
    else:
        planner = ScheduledPlanner(
            settings, predictor, regp, profiles, dataset.client_sizes(),
            flops_per_example=trainer.flops_per_example, down_bytes=nbytes, up_bytes=nbytes,
            registry=registry, selector=inner,
        )  # fmt: skip
    selector = ScheduledSelector(
        inner, planner, config.client.batch_size,
        overselect_rate=s.overselect, skip_infeasible=skip and not admits,
    )  # fmt: skip
    if config.privacy.enabled:
        return planner, None, aggregator
    return planner, selector, SettlementWeighted(aggregator, planner)


def async_simulation(
    config: FedConfig,
    *,
    dataset: ClientPopulation,
    trainer: Trainer,
    executor: Executor,
    profiles: ProfileTable,
    server_optimizer: Any,
    plan: Any,
    aggregator: Aggregator[Any] | None = None,
    pipeline: Pipeline | None = None,
    params: FloatVector | None = None,
) -> AsyncSimulation:
    """FedBuff on the virtual clock (``scheduling.async.enabled``).

    ``aggregator``: the server's rule over each step's ``K`` buffered updates (the
    weighted mean keeps FedBuff's running sum; a robust rule holds the ``K`` vectors).
    ``pipeline``: the uplink codec (its payloads are decoded into the buffer).
    ``params``: the initial model, needed for downlink compression's replica.
    """
    a = config.scheduling.async_
    per_round = config.rounds.clients_per_round or dataset.num_clients
    updates = a.server_updates or max(1, config.rounds.rounds * per_round // a.buffer_size)
    rule = None if aggregator is None or isinstance(aggregator, WeightedMean) else aggregator
    server = FedBuffServer(
        trainer.spec.size,
        FedBuffConfig(
            buffer_size=a.buffer_size,
            max_staleness=a.max_staleness,
            staleness_exponent=a.staleness_exponent,
        ),
        aggregator=rule,
    )
    settings = AsyncSettings(
        updates, min(a.concurrency, dataset.num_clients), plan, config.rounds.eval_every,
        config.seed, config.devices.dropout_rate,
    )  # fmt: skip
    broadcast = None
    if config.downlink.enabled:
        if params is None:
            raise ConfigError("async_simulation: downlink compression needs the initial params")
        broadcast = CompressedBroadcast(params, config.downlink.spec(), config.downlink.history)
    return AsyncSimulation(
        settings, server, trainer, executor, dataset.client_sizes(), dataset.test, profiles,
        server_optimizer, pipeline=pipeline, broadcast=broadcast,
    )  # fmt: skip
