"""What one round of secure aggregation costs each surviving client (Issue 12 part 4).

:class:`ProtocolCost` lists, per client whose masked input was summed, the protocol's
bytes *besides* that masked input (key agreement, share exchange, unmasking: the
masked input itself is the client's ordinary upload, already timed by the
simulator), the bytes it receives, and its measured compute. The simulator charges
them to each device's links (``ProfileTable``) and adds the slowest client's legs
plus the server's compute to the round's simulated time and bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedstrata.secagg.messages import masked_input_nbytes
from fedstrata.secagg.simulate import RoundStats

__all__ = ["ROUND_TRIPS", "ProtocolCost", "protocol_cost"]

ROUND_TRIPS = 4
"""Client-server exchanges of one round: keys, shares, masked input, unmasking."""


@dataclass(frozen=True, eq=False)
class ProtocolCost:
    """Per-client protocol costs of one round, in the order of ``client_ids``.

    Attributes:
        client_ids: the clients whose masked input was summed.
        up_bytes: protocol bytes each sent besides its masked input.
        down_bytes: protocol bytes each received.
        client_s: each client's measured protocol compute (offline plus online).
        server_s: the server's measured compute.
        round_trips: sequential client-server exchanges (each pays the latency).
    """

    client_ids: NDArray[np.int64]
    up_bytes: NDArray[np.int64]
    down_bytes: NDArray[np.int64]
    client_s: NDArray[np.float64]
    server_s: float
    round_trips: int = ROUND_TRIPS


def protocol_cost(
    stats: RoundStats, client_ids: list[int], input_len: int, modulus_bits: int = 32
) -> ProtocolCost:
    """The cost of the first ``len(client_ids)`` protocol parties (the survivors).

    Args:
        stats: the protocol's measured per-party compute and bytes.
        client_ids: federation ids of protocol parties ``0 .. len - 1``.
        input_len: ring elements in each masked input (coordinates + weight).
        modulus_bits: the ring's width (masked inputs travel packed at it).
    """
    n = len(client_ids)
    masked = masked_input_nbytes(input_len, modulus_bits)
    return ProtocolCost(
        client_ids=np.asarray(client_ids, dtype=np.int64),
        up_bytes=np.maximum(stats.bytes_up[:n] - masked, 0).astype(np.int64),
        down_bytes=stats.bytes_down[:n].astype(np.int64),
        client_s=(stats.client_offline_s[:n] + stats.client_online_s[:n]).astype(np.float64),
        server_s=stats.server_offline_s + stats.server_online_s,
    )
