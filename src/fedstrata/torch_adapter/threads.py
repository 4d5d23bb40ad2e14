"""The intra-op thread count of this process, as the simulator's executors set it."""

from __future__ import annotations

import torch

from fedstrata.errors import ConfigError

__all__ = ["set_torch_threads"]


def set_torch_threads(count: int) -> int:
    """Set PyTorch's intra-op thread count for this process; return the previous one.

    A module-level function, so that it pickles by reference into spawned workers
    (:class:`fedstrata.sim.WorkerThreads`).

    Raises:
        ConfigError: ``count`` below 1.
    """
    if count < 1:
        raise ConfigError(f"thread count must be >= 1, got {count}")
    previous = torch.get_num_threads()
    if previous != count:
        torch.set_num_threads(count)
    return previous
