"""Discrete-event simulator: real training in worker processes, simulated time."""

from fedstrata.sim.engine import SimSettings, Simulation, SimulationResult
from fedstrata.sim.executor import Executor, InProcessExecutor, ProcessExecutor
from fedstrata.sim.profiles import DeviceProfile, ProfileDistribution, ProfileTable
from fedstrata.sim.tasks import ClientJob, ClientSource, ClientTask, TaskResult

__all__ = [
    "ClientJob",
    "ClientSource",
    "ClientTask",
    "DeviceProfile",
    "Executor",
    "InProcessExecutor",
    "ProcessExecutor",
    "ProfileDistribution",
    "ProfileTable",
    "SimSettings",
    "Simulation",
    "SimulationResult",
    "TaskResult",
]
