"""Charge a server-side protocol's per-client legs to the simulated clock (Issue 12 part 4).

A round hook that runs a multi-message protocol after the uploads (secure
aggregation: key agreement, share exchange, unmasking) reports per surviving client
the bytes it sends besides its update, the bytes it receives and its compute. Each
client's legs are timed on its own links (:meth:`ProfileTable.legs_s`, one latency
per direction) plus a latency both ways for every further sequential exchange; the
round lasts the slowest client's legs plus the server's compute longer, and the
bytes join the round's ``bytes_up`` / ``bytes_down``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fedstrata.sim.profiles import ProfileTable

__all__ = ["ProtocolCharge", "ProtocolCosts", "RoundCost", "charge"]


class RoundCost(Protocol):
    """Per-client costs of one protocol round (``fedstrata.secagg.ProtocolCost``)."""

    @property
    def client_ids(self) -> NDArray[np.int64]: ...
    @property
    def up_bytes(self) -> NDArray[np.int64]: ...
    @property
    def down_bytes(self) -> NDArray[np.int64]: ...
    @property
    def client_s(self) -> NDArray[np.float64]: ...
    @property
    def server_s(self) -> float: ...
    @property
    def round_trips(self) -> int: ...


@runtime_checkable
class ProtocolCosts(Protocol):
    """A round hook whose protocol costs the simulator charges."""

    def round_cost(self, round_idx: int) -> RoundCost | None:
        """The costs of ``round_idx``, or None when the protocol did not run."""
        ...


@dataclass(frozen=True)
class ProtocolCharge:
    """What a protocol added to a round: simulated seconds and bytes."""

    seconds: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0


def charge(cost: RoundCost, profiles: ProfileTable) -> ProtocolCharge:
    """The simulated seconds and bytes ``cost`` adds to its round."""
    ids = cost.client_ids
    if ids.size == 0:
        return ProtocolCharge(cost.server_s)
    down_s, _, up_s = profiles.legs_s(
        ids,
        np.zeros(ids.size, dtype=np.int64),
        0.0,
        cost.down_bytes.astype(np.float64),
        cost.up_bytes.astype(np.float64),
    )
    extra_latency = 2 * max(cost.round_trips - 1, 0) * profiles.latency_s[ids]
    slowest = float(np.max(down_s + up_s + extra_latency + cost.client_s))
    return ProtocolCharge(
        slowest + cost.server_s, int(cost.up_bytes.sum()), int(cost.down_bytes.sum())
    )
