"""Build a federation from a :class:`~fedstrata.config.FedConfig` and run it.

This is the composition root: the only place that turns configuration into
objects (dataset, trainer factory, pipeline, aggregator, server optimizer, executor,
device profiles, sinks) and wires them into a :class:`~fedstrata.sim.Simulation`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedstrata.aggregation import AggregatorSpec, AnyAggregator, make_aggregator
from fedstrata.algorithms import AnyServerOptimizer, ServerOptimizerSpec, make_server_optimizer
from fedstrata.config import FedConfig, dump_config
from fedstrata.config.models import ClientConfig, DataConfig, ServerConfig
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core.context import derive_rng, derive_seed
from fedstrata.core.params import ParamSpec
from fedstrata.core.training import LocalPlan, OptimizerKind
from fedstrata.data import FederatedDataset, make_federated
from fedstrata.monitoring import (
    RoundMetrics,
    RunStarted,
    RunStatus,
    RunStore,
    RunTotals,
    new_run_dir,
    write_report,
)
from fedstrata.sim import (
    ClientJob,
    Executor,
    InProcessExecutor,
    ProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
    Simulation,
    SimulationResult,
)
from fedstrata.torch_adapter import TorchTrainerFactory

__all__ = ["RunResult", "aggregator", "build_dataset", "local_plan", "run", "server_optimizer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` returns: the simulation's result and where it was stored."""

    simulation: SimulationResult
    run_dir: Path | None
    num_params: int
    workers: int


def build_dataset(cfg: DataConfig) -> FederatedDataset:
    """The federated dataset named by ``cfg``."""
    return make_federated(
        cfg.name,
        partition=cfg.partition,
        num_clients=cfg.num_clients,
        seed=cfg.seed,
        shards_per_client=cfg.shards_per_client,
        dirichlet_alpha=cfg.dirichlet_alpha,
        quantity_sigma=cfg.quantity_sigma,
        synthetic_alpha=cfg.synthetic_alpha,
        synthetic_beta=cfg.synthetic_beta,
        path=cfg.path,
    )


def local_plan(cfg: ClientConfig) -> LocalPlan:
    """The clients' training plan."""
    return LocalPlan(
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        epochs=cfg.epochs,
        steps=cfg.steps,
        optimizer=OptimizerKind(cfg.optimizer),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        prox_mu=cfg.prox_mu,
    )


def server_optimizer(cfg: ServerConfig) -> AnyServerOptimizer:
    """The server optimizer named by ``cfg`` (Reddi et al. 2021)."""
    return make_server_optimizer(
        ServerOptimizerSpec(
            name=cfg.optimizer,
            lr=cfg.lr,
            momentum=cfg.momentum,
            beta1=cfg.beta1,
            beta2=cfg.beta2,
            tau=cfg.tau,
        )
    )


def aggregator(cfg: ServerConfig) -> AnyAggregator:
    """The aggregator named by ``cfg``."""
    return make_aggregator(
        AggregatorSpec(
            name=cfg.aggregator, trim_fraction=cfg.trim_fraction, krum_byzantine=cfg.krum_byzantine
        )
    )


def choose_workers(config: FedConfig, cohort: int) -> int:
    """Worker processes to use: 0 means train in this process.

    ``auto`` uses one worker per core when there are at least two cores and enough
    clients per round to keep them busy; otherwise it trains in-process.
    """
    if config.sim.start_method == "inprocess":
        return 0
    if config.sim.workers != "auto":
        return config.sim.workers
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return cores if cores >= 2 and cohort >= 2 * cores else 0


def _profiles(config: FedConfig, n: int) -> ProfileTable:
    d = config.devices
    if d.profiles_path is not None:
        return ProfileTable.load_csv(d.profiles_path, n)
    dist = ProfileDistribution(
        flops_max=d.flops_max,
        compute_spread=d.compute_spread,
        uplink_mbps=d.uplink_mbps,
        downlink_mbps=d.downlink_mbps,
        bandwidth_sigma=d.bandwidth_sigma,
        latency_ms=d.latency_ms,
        availability=d.availability,
        memory_gb=d.memory_gb,
    )
    return ProfileTable.generate(n, dist, derive_rng(config.seed, 0, -1, "profiles"))


def _executor(job: ClientJob, size: int, workers: int) -> Executor:
    if workers == 0:
        return InProcessExecutor(job, size)
    return ProcessExecutor(job, size, workers)


def run(
    config: FedConfig,
    *,
    on_round: Callable[[RoundMetrics], None] | None = None,
    run_name: str | None = None,
) -> RunResult:
    """Run the federation described by ``config``.

    Args:
        config: the validated configuration.
        on_round: called with each round's metrics (progress display).
        run_name: name of the run directory (default: the config's name).

    Raises:
        FedstrataError: invalid data or configuration discovered while building.
    """
    dataset = build_dataset(config.data)
    factory = TorchTrainerFactory(
        model=config.model.kind,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        hidden=config.model.hidden,
        shuffle_seeding=config.client.shuffle,
    )
    cohort = config.rounds.clients_per_round or dataset.num_clients
    workers = choose_workers(config, cohort)
    job = ClientJob(trainer_factory=factory, data=dataset, root_seed=config.seed)
    trainer = factory()
    size = trainer.spec.size
    executor = _executor(job, size, workers)
    store = _open_store(config, run_name, dataset.num_clients, size)
    try:
        sim = Simulation(
            settings=SimSettings(
                config.rounds.rounds,
                local_plan(config.client),
                config.rounds.eval_every,
                config.seed,
            ),
            coordinator=RoundCoordinator(
                RoundPolicy(
                    config.rounds.clients_per_round,
                    config.rounds.min_clients,
                    config.rounds.deadline_s,
                    config.seed,
                )
            ),
            trainer=trainer,
            executor=executor,
            client_sizes=dataset.client_sizes(),
            test_data=dataset.test,
            profiles=_profiles(config, dataset.num_clients),
            server_optimizer=server_optimizer(config.server),
            aggregator=aggregator(config.server),
            sinks=() if store is None else (store,),
            on_round=on_round,
        )
        init_seed = config.model.init_seed
        if init_seed is None:
            init_seed = derive_seed(config.seed, 0, -1, "init")
        result = sim.run(trainer.initial_params(init_seed))
    except BaseException:
        if store is not None:
            store.close()  # records the run as interrupted
        raise
    finally:
        executor.close()
    run_dir = None if store is None else _finish_store(store, config, result, trainer.spec)
    return RunResult(result, run_dir, size, workers)


def _open_store(
    config: FedConfig, run_name: str | None, num_clients: int, size: int
) -> RunStore | None:
    if not config.output.run_store:
        return None
    run_dir = new_run_dir(config.output.dir, run_name or config.name)
    store = RunStore.create(run_dir)
    store.emit(RunStarted(run_dir.name, dump_config(config), num_clients, size))
    return store


def _finish_store(
    store: RunStore, config: FedConfig, result: SimulationResult, spec: ParamSpec
) -> Path:
    totals = RunTotals()
    for metrics in result.rounds:
        totals.add(metrics)
    store.save_model(spec, result.params)
    store.emit(totals.finish(store.path.name, RunStatus.COMPLETED, wall_time_s=result.wall_s))
    store.close()
    if config.output.report:
        write_report(store.path)
    return store.path
