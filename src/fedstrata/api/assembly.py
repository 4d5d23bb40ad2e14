"""Wiring the built components into a driver (flat, tree or FedBuff simulation) for
:func:`fedstrata.api.run`; resources are released by the caller's ``ExitStack``."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack, closing
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from fedstrata.api.components import (
    distributed_allocator,
    executor,
    forks,
    init_seed,
    local_plan,
    pipeline,
    privacy_hooks,
    profiles,
    secure_aggregation,
    simulation,
    warm_up,
)
from fedstrata.builders import ServerStrategy
from fedstrata.config import FedConfig
from fedstrata.core.params import FloatVector
from fedstrata.core.state import DiskStateStore
from fedstrata.core.training import ClientPopulation, ClientStateful, Trainer, TrainerFactory
from fedstrata.monitoring import RunStore, Sink
from fedstrata.sim import ClientJob, Simulation
from fedstrata.sim.hierarchy import HierarchicalSimulation
from fedstrata.sim.tasks import ClientSource

__all__ = ["assemble"]

if TYPE_CHECKING:
    from fedstrata.sim.async_engine import AsyncSimulation


def assemble(
    config: FedConfig,
    *,
    dataset: ClientPopulation,
    factory: TrainerFactory,
    trainer: Trainer,
    workers: int,
    store: RunStore | None,
    sinks: tuple[Sink, ...],
    stack: ExitStack,
    notes: dict[str, str],
    strategy: ServerStrategy,
    eval_data: ClientSource | None = None,
) -> tuple[Simulation | AsyncSimulation | HierarchicalSimulation, FloatVector]:
    """Wire the components into a simulation; resources are released by ``stack``.

    Facts the run's summary should show (where device profiles came from) go to ``notes``.
    """
    size = trainer.spec.size
    allocator = distributed_allocator(config, dataset.num_clients)
    state_dir = _client_state_dir(store, stack)
    secure = secure_aggregation(config, size, dataset, allocator, state_dir)
    pipe = pipeline(config, size, state_dir, secure and secure[0])
    job = ClientJob(
        factory, dataset, config.seed, pipe, eval_data, _local_store(trainer, state_dir)
    )
    if workers > 0 and forks(config.sim):  # forked workers inherit a warmed-up torch
        warm_up(trainer, dataset, local_plan(config.client), config.seed)
    batch = config.client.batch_size
    ex = stack.enter_context(
        closing(executor(job, trainer, workers, config.sim, batch_size=batch))
    )
    params = trainer.initial_params(init_seed(config))
    table, registry = profiles(config, dataset.num_clients), None
    if config.scheduling.enabled or config.scheduling.async_.enabled:
        from fedstrata.api.scheduling import async_simulation, open_registry, registry_table

        registry = open_registry(config, stack)
        merged = registry_table(registry, table)
        table, notes["device profiles"] = merged.table, merged.summary()
    if config.topology.mode != "flat":
        from fedstrata.api.hierarchy import hierarchical_simulation

        tree = hierarchical_simulation(
            config, dataset=dataset, trainer=trainer, executor=ex, pipeline=pipe, profiles=table,
            params=params, strategy=strategy, registry=registry, secure=secure,
            allocator=allocator,
        )  # fmt: skip
        tree.sinks = sinks
        return tree, params
    if config.scheduling.async_.enabled:
        runner = async_simulation(
            config, dataset=dataset, trainer=trainer, executor=ex, profiles=table,
            server_optimizer=strategy.optimizer, plan=local_plan(config.client),
            aggregator=strategy.aggregator, pipeline=pipe, params=params,
        )  # fmt: skip
        runner.sinks = sinks
        return runner, params
    if secure is not None:  # scheduling wraps it (settlement weights, Issue 12 part 4)
        strategy = replace(strategy, aggregator=secure[1])
    sim = simulation(
        config, dataset=dataset, trainer=trainer, executor=ex, pipeline=pipe, params=params,
        profiles=table, registry=registry, strategy=strategy,
    )  # fmt: skip
    sim.hooks = privacy_hooks(config, pipe, dataset.num_clients, size, allocator)
    if secure is not None:
        sim.hooks = (*sim.hooks, secure[1])
    sim.sinks = sinks
    return sim, params


def _local_store(trainer: Trainer, state_dir: Path) -> DiskStateStore | None:
    """Where each client's local buffers (FedBN) live; None when the model has none."""
    if isinstance(trainer, ClientStateful) and trainer.client_state is not None:
        return DiskStateStore(state_dir)
    return None


def _client_state_dir(store: RunStore | None, stack: ExitStack) -> Path:
    """Where per-client state (error-feedback residuals, local buffers) lives for this run."""
    if store is not None:
        return store.path / "client_state"
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedstrata-state-")))
