"""Build the privacy budget allocator and distributed DP's parts from the config.

The builders live in :mod:`fedstrata.builders_privacy` (shared with the gRPC
runtime, Issue 13 part 2); this module keeps the simulator's names.
"""

from __future__ import annotations

from fedstrata.builders_privacy import (
    distributed_allocator,
    distributed_hook,
    dp_allocator,
    noise_shares_for,
    ring_sensitivity_real,
    sampling_rate,
)

__all__ = [
    "distributed_allocator",
    "distributed_hook",
    "dp_allocator",
    "noise_shares_for",
    "ring_sensitivity_real",
    "sampling_rate",
]
