"""Run a federation described by a :class:`~fedstrata.config.FedConfig`.

The composition root: builds the components (:mod:`fedstrata.api.components`),
wires them into a :class:`~fedstrata.sim.Simulation` (:mod:`fedstrata.api.assembly`),
and records the run in a run directory (its end: :mod:`fedstrata.api.run_end`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedstrata.api.assembly import assemble
from fedstrata.api.checkpoint_stats import with_checkpoint_stats
from fedstrata.api.components import (
    build_dataset,
    choose_workers,
    forks,
    pin_layout,
    population,
    resolve_task,
    trainer_factory,
)
from fedstrata.api.fedeval import federated_split
from fedstrata.api.resume import checkpoints, open_run, reopen_run, resumed_progress
from fedstrata.api.run_end import (
    RunInterrupted,
    finish_store,
    interrupted,
    spawned,
    warn_if_most_failed,
)
from fedstrata.builders import server_strategy
from fedstrata.config import FedConfig, dump_config
from fedstrata.config.failover import SIMULATION_REFUSAL
from fedstrata.coordinator.hooks import RoundHook
from fedstrata.core.params import FloatVector
from fedstrata.core.training import ClientPopulation, Trainer
from fedstrata.errors import ConfigError
from fedstrata.monitoring import RoundMetrics, RunStarted, RunStore, Sink
from fedstrata.monitoring.wiring import MonitoringSinks
from fedstrata.sim import Simulation, SimulationResult
from fedstrata.sim.hierarchy import HierarchicalSimulation
from fedstrata.sim.prefetch import Prefetch

__all__ = ["RunInterrupted", "RunResult", "load_model", "run"]

if TYPE_CHECKING:
    from torch import nn

    from fedstrata.api.checkpoints import RoundCheckpoints
    from fedstrata.checkpoint.snapshot import EngineSnapshot
    from fedstrata.torch_adapter import Task
    from fedstrata.torch_adapter.probe import SgdSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` returns: the simulation's result and where it was stored."""

    simulation: SimulationResult
    run_dir: Path | None
    num_params: int
    workers: int
    executor: str = "in-process"  # where clients trained, e.g. "4 Ray actors"
    notes: Mapping[str, str] = field(default_factory=dict)  # extra summary rows
    report_pending: bool = False  # report.html is being written in the background


def run(
    config: FedConfig,
    *,
    on_round: Callable[[RoundMetrics], None] | None = None,
    run_name: str | None = None,
    hooks: Sequence[RoundHook] = (),
    on_start: Callable[[int], None] | None = None,
    task: Task | str | None = None,
    server_optimizer: object = None,
    aggregator: object = None,
    sinks: Sequence[Sink] = (),
    background_report: bool = False,
    resume: Path | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> RunResult:
    """Run the federation described by ``config``.

    Args:
        config: the validated configuration.
        task: your own task (a :class:`fedstrata.torch_adapter.Task` or an import
            string); default: ``config.task``, else the config's built-in model.
        on_round: called with each round's metrics (progress display).
        run_name: name of the run directory (default: the config's name).
        hooks: extra server-side round hooks (e.g. a privacy budget allocator).
        on_start: called with the number of clients once the dataset is loaded.
        server_optimizer: your own server optimizer (an object with ``init`` and
            ``step``, its class, or an import string); default: ``server.optimizer``.
        aggregator: your own aggregator (an Aggregator, a rule ``(vectors, weights)
            -> aggregate``, its class, or an import string); default:
            ``server.aggregator``. See :mod:`fedstrata.strategy`.
        sinks: your own metric sinks; they receive every round's events and the alerts
            (closing them is yours). ``config.monitoring`` adds the Prometheus exporter,
            TensorBoard, MLflow and the alert rules (:mod:`fedstrata.monitoring.wiring`).
        background_report: with ``output.report``, write ``report.html`` in a process
            of its own after the run (:attr:`RunResult.report_pending`) instead of
            before returning: the command line's choice, so short runs end at once.
        resume: an interrupted run's directory: continue it from its newest good
            checkpoint (``config`` must be the run's own, its ``config.yaml``); rounds
            it recorded after that checkpoint are truncated and run again.

    Raises:
        TaskError: the task's module does not import, or its model factory or data
            are unusable (the message names the function).
        FedstrataError: invalid data or configuration discovered while building.
        RunInterrupted: a KeyboardInterrupt stopped the run; the last completed
            round's model and the run so far were saved first.
        CheckpointError: ``resume`` has no readable checkpoint.
        CheckpointCorrupt: its newest good checkpoint is of another configuration.
    """
    if config.failover.enabled:
        raise ConfigError(SIMULATION_REFUSAL)
    strategy = server_strategy(config, optimizer=server_optimizer, aggregation=aggregator)
    dataset, chosen, sgd = _load(config, task)
    split = federated_split(config, dataset, chosen)
    dataset = split.population
    if on_start is not None:
        on_start(dataset.num_clients)
    factory = trainer_factory(config, dataset, chosen, sgd)
    trainer = factory()
    factory = pin_layout(factory, trainer)
    workers = choose_workers(config, config.rounds.clients_per_round or dataset.num_clients)
    opened = (
        open_run(config, run_name, dataset.num_clients, trainer.spec.size)
        if resume is None
        else reopen_run(config, resume)
    )
    store, snap = opened.store, opened.snapshot
    prior_wall_s = None if snap is None else snap.wall_s  # the run's time before this segment
    if snap is not None and on_resume is not None:
        on_resume(snap.rounds_done)
    notes: dict[str, str] = {}
    progress: SimulationResult | None = None
    start = time.perf_counter()
    try:
        with ExitStack() as stack:
            monitor = stack.enter_context(
                _open_monitoring(
                    config,
                    store=store,
                    run_name=run_name,
                    num_clients=dataset.num_clients,
                    trainer=trainer,
                    sinks=sinks,
                    notes=notes,
                )
            )
            ckpt = checkpoints(config, store, stack)
            sim, params = assemble(
                config,
                dataset=dataset,
                factory=factory,
                trainer=trainer,
                workers=workers,
                store=store,
                sinks=monitor.sinks,
                stack=stack,
                notes=notes,
                strategy=strategy,
                eval_data=split.eval_data,
            )
            sim.fed_eval = split.evaluator
            progress = resumed_progress(params, store, sim.fed_eval, snap)
            result = _drive(
                sim,
                params,
                progress,
                on_round=on_round,
                hooks=with_checkpoint_stats(hooks, ckpt),
                ckpt=ckpt,
                snap=snap,
            )
            if ckpt is not None:
                ckpt.close()
            where = sim.executor.description
    except KeyboardInterrupt:
        elapsed_s = time.perf_counter() - start
        stop = interrupted(store, config, progress, trainer, elapsed_s, prior_wall_s=prior_wall_s)
        raise stop from None
    except BaseException:
        if store is not None:
            store.close()  # records the run as interrupted
        raise
    warn_if_most_failed(result)
    later = background_report and config.output.report
    run_dir = None
    if store is not None:
        run_dir = finish_store(
            store, config, result, trainer, report=not later, prior_wall_s=prior_wall_s
        )
    pending = later and run_dir is not None and spawned(run_dir)
    return RunResult(result, run_dir, trainer.spec.size, workers, where, notes, pending)


def load_model(run_dir: Path | str, task: Task | str) -> nn.Module:
    """A run's final model in the task's own module (Issue 14 part 7).

    ``task`` is the task object or its import string (resolved from the current
    directory). For a built-in model pass
    ``fedstrata.torch_adapter.builtin_task(kind, input_shape, num_classes, hidden)``.

    Raises:
        CheckpointError: the run directory has no readable ``model.pt``.
        TaskError: the task cannot be loaded or its module does not fit the weights.
    """
    from fedstrata.torch_adapter import Task, resolve_task
    from fedstrata.torch_adapter import load_model as load

    chosen = task if isinstance(task, Task) else resolve_task(task)
    return load(Path(run_dir), chosen)


def _load(
    config: FedConfig, task: Task | str | None
) -> tuple[ClientPopulation, Task | None, SgdSettings | None]:
    """The clients' data, the task (None: the config's built-in model), and its
    optimizer's settings when that is a plain SGD (the fast path trains it)."""
    if task is None and config.task is None:
        # Build the dataset in a forked child while this process imports torch.
        pending = Prefetch(build_dataset, config.data, background=forks(config.sim))
        import fedstrata.torch_adapter  # noqa: F401  (deferred: imports torch meanwhile)

        return pending.result(), None, None
    chosen = resolve_task(config, task)
    if chosen is None:  # unreachable: task or config.task is set
        raise ConfigError("no task to run")
    from fedstrata.torch_adapter.probe import plain_sgd

    sgd = plain_sgd(chosen)  # milliseconds: the probe does not import torch._dynamo
    dataset = population(config, chosen)
    dataset.client_sizes()
    return dataset, chosen, sgd


def _open_monitoring(
    config: FedConfig,
    *,
    store: RunStore | None,
    run_name: str | None,
    num_clients: int,
    trainer: Trainer,
    sinks: Sequence[Sink],
    notes: dict[str, str],
) -> MonitoringSinks:
    """The run's sinks (``config.monitoring``; the store first), told the run started;
    the exporter's address goes into ``notes``."""
    run_id = store.path.name if store is not None else run_name or config.name
    monitor = MonitoringSinks.open(
        config.monitoring, run=run_id, store=store, total_rounds=config.rounds.rounds,
        extra=sinks,
    )  # fmt: skip
    monitor.emit_owned(RunStarted(run_id, dump_config(config), num_clients, trainer.spec.size))
    if monitor.exporter_url is not None:
        notes["Prometheus metrics"] = monitor.exporter_url
    return monitor


def _drive(
    sim: Any,
    params: FloatVector,
    progress: SimulationResult,
    *,
    on_round: Callable[[RoundMetrics], None] | None,
    hooks: Sequence[RoundHook],
    ckpt: RoundCheckpoints | None,
    snap: EngineSnapshot | None,
) -> SimulationResult:
    """Run the assembled driver from ``progress`` (a resumed run's rounds so far):
    the synchronous drivers take the round hooks, the checkpoints and the snapshot;
    FedBuff reports each update."""
    if isinstance(sim, (Simulation, HierarchicalSimulation)):
        sim.on_round, sim.hooks = on_round, (*sim.hooks, *hooks)
        sim.on_state = ckpt
        if ckpt is not None:  # snapshots carry the run's wall time over its segments
            ckpt.start(0.0 if snap is None else snap.wall_s)
        resume = None if snap is None else snap.parts
        result: SimulationResult = sim.run(params, progress, resume=resume)
        return result
    sim.on_update = on_round
    done: SimulationResult = sim.run(params, progress)
    return done
