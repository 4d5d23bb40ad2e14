"""Public Python API: build and run a federation from a configuration."""

from fedstrata.api.components import (
    aggregator,
    build_dataset,
    choose_workers,
    local_plan,
    sampling_rate,
    server_optimizer,
)
from fedstrata.api.runner import RunResult, load_model, run

__all__ = [
    "RunResult",
    "aggregator",
    "build_dataset",
    "choose_workers",
    "load_model",
    "local_plan",
    "run",
    "sampling_rate",
    "server_optimizer",
]
