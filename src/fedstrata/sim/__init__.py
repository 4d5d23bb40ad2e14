"""Discrete-event simulator: real training in worker processes, simulated time."""

from fedstrata.coordinator.hooks import RoundHook
from fedstrata.sim._workers import (
    WorkerThreads,
    auto_threads,
    resolve_start_method,
    threads_per_process,
    usable_cores,
)
from fedstrata.sim.engine import SimSettings, Simulation, SimulationResult
from fedstrata.sim.executor import Executor, InProcessExecutor, ProcessExecutor
from fedstrata.sim.hooks import (
    Broadcaster,
    ClientPlanner,
    ClientReport,
    CompressedBroadcast,
    DenseBroadcast,
)
from fedstrata.sim.profiles import DeviceProfile, ProfileDistribution, ProfileTable
from fedstrata.sim.tasks import ClientJob, ClientSource, ClientTask, TaskResult

__all__ = [
    "Broadcaster",
    "ClientJob",
    "ClientPlanner",
    "ClientReport",
    "ClientSource",
    "ClientTask",
    "CompressedBroadcast",
    "DenseBroadcast",
    "DeviceProfile",
    "Executor",
    "InProcessExecutor",
    "ProcessExecutor",
    "ProfileDistribution",
    "ProfileTable",
    "RoundHook",
    "SimSettings",
    "Simulation",
    "SimulationResult",
    "TaskResult",
    "WorkerThreads",
    "auto_threads",
    "resolve_start_method",
    "threads_per_process",
    "usable_cores",
]
