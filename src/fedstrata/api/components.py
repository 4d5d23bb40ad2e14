"""Turn configuration into the simulator's components.

Each function builds one piece from its config section; :mod:`fedstrata.api.runner`
assembles them. Heavy optional dependencies (torch, dp-accounting, cryptography) are
imported only by the builders that need them.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fedstrata.aggregation.protocol import Aggregator
from fedstrata.builders import (
    ServerStrategy,
    aggregator,
    build_dataset,
    init_seed,
    local_plan,
    population,
    resolve_task,
    server_optimizer,
    server_strategy,
    trainer_factory,
)
from fedstrata.builders_dp import cohort_selector
from fedstrata.builders_privacy import (
    distributed_allocator,
    dp_allocator,
    poisson_rate,
    privacy_hooks,
    sampling_rate,
    uplink_pipeline,
)
from fedstrata.builders_privacy import secure_aggregation as shared_secure_aggregation
from fedstrata.config import FedConfig
from fedstrata.config.models import SimConfig
from fedstrata.coordinator import RoundCoordinator, RoundPolicy, Selector
from fedstrata.core.context import RoundContext, derive_rng
from fedstrata.core.params import FloatVector
from fedstrata.core.state import DiskStateStore
from fedstrata.core.training import (
    ClientPopulation,
    ClientStateful,
    LocalPlan,
    Trainer,
    TrainerFactory,
)
from fedstrata.pipeline import Codec, Pipeline
from fedstrata.sim import (
    ClientJob,
    Executor,
    InProcessExecutor,
    ProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
    Simulation,
    WorkerThreads,
    auto_threads,
    resolve_start_method,
    usable_cores,
)
from fedstrata.sim.hooks import CompressedBroadcast

__all__ = [
    "aggregator",
    "build_dataset",
    "choose_workers",
    "distributed_allocator",
    "dp_allocator",
    "executor",
    "forks",
    "init_seed",
    "local_plan",
    "pin_layout",
    "pipeline",
    "population",
    "privacy_hooks",
    "profiles",
    "resolve_task",
    "run_precision",
    "sampling_rate",
    "save_torch_model",
    "secure_aggregation",
    "server_optimizer",
    "simulation",
    "trainer_factory",
    "warm_up",
    "worker_threads",
]

if TYPE_CHECKING:
    from fedstrata.privacy import BudgetAllocator
    from fedstrata.scheduling import Registry
    from fedstrata.secagg import RingCodec, SecAggAggregator


def choose_workers(config: FedConfig, cohort: int) -> int:
    """Worker processes to start: 0 means train in this process only.

    The calling process trains too, so ``auto`` starts one worker fewer than there
    are cores, and none when there is one core or too few clients per round (< 4 per
    core) to repay the processes' start-up.
    """
    if config.sim.start_method == "inprocess":
        return 0
    if config.sim.workers != "auto":
        return config.sim.workers
    cores = usable_cores()
    return cores - 1 if cores >= 2 and cohort >= 4 * cores else 0


def forks(sim: SimConfig) -> bool:
    """Whether worker processes (and the dataset prefetch) start with ``fork``."""
    return sim.start_method != "inprocess" and resolve_start_method(sim.start_method) == "fork"


def worker_threads(sim: SimConfig, workers: int, step_flops: float) -> WorkerThreads:
    """Intra-op threads of each training process: ``sim.threads``, or :func:`auto_threads`.

    Applied with :func:`fedstrata.torch_adapter.set_torch_threads` (imports torch).

    Args:
        sim: the simulator's section (``threads``).
        workers: worker processes (the calling process trains too).
        step_flops: work of one training step (FLOPs per example x batch size).
    """
    from fedstrata.torch_adapter import set_torch_threads  # deferred: imports torch

    count = auto_threads(workers, step_flops) if sim.threads == "auto" else sim.threads
    return WorkerThreads(count, set_torch_threads)


def run_precision(config: FedConfig) -> str:
    """``client.precision`` resolved as the trainer resolves it on this machine's CPU
    (``auto``: bf16 with native bfloat16, else fp32), for the simulated clock."""
    if config.client.precision != "auto":
        return config.client.precision
    from fedstrata.torch_adapter.precision import PrecisionPolicy  # deferred: imports torch

    return PrecisionPolicy.of("auto").mode.value


def profiles(config: FedConfig, n: int) -> ProfileTable:
    """The run's device profiles (a CSV, else generated) at the run's precision."""
    return _profiles(config, n).at_precision(run_precision(config))


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
        bf16_speedup=d.bf16_speedup,
        fp16_speedup=d.fp16_speedup,
    )
    return ProfileTable.generate(n, dist, derive_rng(config.seed, 0, -1, "profiles"))


def executor(
    job: ClientJob,
    trainer: Trainer,
    workers: int,
    sim: SimConfig | None = None,
    *,
    batch_size: int = 1,
) -> Executor:
    """Where clients train: this process, worker processes, or Ray actors.

    ``batch_size`` sizes a training step for ``sim.threads: auto``.
    """
    sim = SimConfig() if sim is None else sim
    threads = worker_threads(sim, workers, trainer.flops_per_example * batch_size)
    method = resolve_start_method(sim.start_method) if workers > 0 else "fork"
    if sim.backend == "ray":
        from fedstrata.sim.ray_executor import open_ray_executor

        return open_ray_executor(
            job, trainer.spec.size, address=sim.ray_address, fallback_workers=workers,
            local_trainer=trainer, start_method=method, threads=threads,
        )  # fmt: skip
    if workers == 0:
        return InProcessExecutor(job, trainer.spec.size, trainer, threads=threads)
    return ProcessExecutor(
        job, trainer.spec.size, workers, trainer, start_method=method, threads=threads
    )


def pin_layout(factory: TrainerFactory, trainer: Trainer) -> TrainerFactory:
    """``factory`` that makes every worker check its model against ``trainer``'s.

    A task's model factory that builds another architecture in a worker then fails
    each of that worker's clients with a message naming the differing tensor.
    """
    from fedstrata.torch_adapter import TaskTrainerFactory
    from fedstrata.torch_adapter.binding import shapes_of

    if isinstance(factory, TaskTrainerFactory):
        return replace(factory, expected=shapes_of(trainer.spec))
    return factory


def save_torch_model(trainer: Trainer, params: FloatVector, run_dir: Path) -> None:
    """Write ``model.pt``, the task module's ``state_dict`` (Issue 14 part 7)."""
    from fedstrata.torch_adapter import TorchTrainer, save_state_dict
    from fedstrata.torch_adapter.export import MODEL_PT

    if isinstance(trainer, TorchTrainer):
        save_state_dict(trainer.task, params, run_dir / MODEL_PT)


def warm_up(trainer: Trainer, dataset: ClientPopulation, plan: LocalPlan, seed: int) -> None:
    """Run one tiny training step and evaluation so forked workers inherit warm code paths."""
    params = trainer.initial_params(seed)
    sample = dataset.client(0)
    ctx = RoundContext(0, seed).for_client(0)
    trainer.train(params, sample, replace(plan, epochs=None, steps=1), ctx, np.empty_like(params))
    trainer.evaluate(params, sample)
    if isinstance(trainer, ClientStateful) and trainer.client_state is not None:
        trainer.client_state.reset()  # central evaluation sees the factory's local buffers


def secure_aggregation(
    config: FedConfig,
    size: int,
    dataset: ClientPopulation,
    allocator: BudgetAllocator | None = None,
    state_dir: Path | None = None,
) -> tuple[RingCodec, SecAggAggregator] | None:
    """The ring codec and secure aggregator, or None when ``secagg`` is off
    (:func:`fedstrata.builders_privacy.secure_aggregation`, shared with the runtime).

    With ``compression.error_feedback`` clients keep their residuals under ``state_dir``.

    Raises:
        ConfigError: error feedback without ``state_dir``, or the ring overflows.
    """
    if not config.secagg.enabled:
        return None
    largest = int(dataset.client_sizes().max())
    store = None if state_dir is None else functools.partial(DiskStateStore, state_dir)
    return shared_secure_aggregation(
        config, size, dataset.num_clients, largest, allocator=allocator, store=store
    )


def pipeline(
    config: FedConfig, size: int, state_dir: Path, ring: Codec | None = None
) -> Pipeline | None:
    """The uplink pipeline, or None for the dense fast path
    (:func:`fedstrata.builders_privacy.uplink_pipeline`; residuals under ``state_dir``)."""
    return uplink_pipeline(config, size, functools.partial(DiskStateStore, state_dir), ring)


def sim_settings(config: FedConfig) -> SimSettings:
    """Rounds, local plan, evaluation cadence, seed and weighting (uniform under DP)."""
    r = config.rounds
    weighting: Literal["examples", "uniform"] = "uniform" if config.privacy.enabled else "examples"
    return SimSettings(
        r.rounds, local_plan(config.client), r.eval_every, config.seed, weighting=weighting,
        dropout_rate=config.devices.dropout_rate,
    )  # fmt: skip


def round_coordinator(
    config: FedConfig, num_clients: int, selector: Selector | None = None
) -> RoundCoordinator:
    """Cohort size, ``min_clients``, deadline and (under DP) Poisson sampling."""
    r = config.rounds
    # Poisson cohorts for central DP; fixed-size under secure aggregation (its cohort)
    poisson = poisson_rate(config, num_clients)
    policy = RoundPolicy(
        r.clients_per_round, r.min_clients, r.deadline_s, config.seed, poisson_rate=poisson
    )
    return RoundCoordinator(policy, selector=cohort_selector(config, num_clients, selector))


def broadcaster(config: FedConfig, params: FloatVector) -> CompressedBroadcast | None:
    """The compressed downlink (``downlink``), or None for the dense model."""
    d = config.downlink
    return CompressedBroadcast(params, d.spec(), d.history) if d.enabled else None


def simulation(
    config: FedConfig,
    *,
    dataset: ClientPopulation,
    trainer: Trainer,
    executor: Executor,
    pipeline: Pipeline | None,
    params: FloatVector,
    profiles: ProfileTable,
    registry: Registry | None = None,
    strategy: ServerStrategy | None = None,
) -> Simulation:
    """The simulation of ``config`` (hooks, sinks and progress are set by the runner).

    ``strategy``: the server optimizer and aggregator (default: the config's).
    """
    planner = selector = None
    strategy = strategy or server_strategy(config)
    agg: Aggregator[Any] = strategy.aggregator
    if config.scheduling.enabled:
        from fedstrata.api.scheduling import scheduler  # deferred: SQLAlchemy, Alembic

        planner, selector, agg = scheduler(
            config, dataset=dataset, trainer=trainer, profiles=profiles, registry=registry,
            aggregator=agg,
        )  # fmt: skip
    return Simulation(
        settings=sim_settings(config),
        coordinator=round_coordinator(config, dataset.num_clients, selector),
        trainer=trainer,
        executor=executor,
        client_sizes=dataset.client_sizes(),
        test_data=dataset.test,
        profiles=profiles,
        server_optimizer=strategy.optimizer,
        aggregator=agg,
        planner=planner,
        pipeline=pipeline,
        broadcast=broadcaster(config, params),
    )
