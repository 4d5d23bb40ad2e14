"""Events the round coordinator consumes and commands it returns.

Drivers (the simulator, the network runtime) translate what happens to them into
events and carry out the commands; the coordinator itself does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Accept",
    "ClientFailed",
    "CloseRound",
    "Command",
    "DeadlinePassed",
    "Event",
    "Reject",
    "RoundOutcome",
    "SendModel",
    "StartRound",
    "UpdateArrived",
]


@dataclass(frozen=True)
class StartRound:
    """Begin round ``round_idx`` at ``now_s`` choosing among ``available`` client ids."""

    round_idx: int
    now_s: float
    available: NDArray[np.int64]


@dataclass(frozen=True)
class UpdateArrived:
    """A client's update reached the server at ``arrival_s``.

    ``version``: the model version the client was sent (a buffered run's staleness is
    counted from it); None in synchronous rounds, where every client holds the round's.
    """

    client_id: int
    arrival_s: float
    weight: float
    version: int | None = None


@dataclass(frozen=True)
class ClientFailed:
    """A client failed (exception, invalid update, disconnect) with ``reason``."""

    client_id: int
    reason: str


@dataclass(frozen=True)
class DeadlinePassed:
    """Every expected update has been reported, or the deadline passed, at ``now_s``."""

    now_s: float


Event = StartRound | UpdateArrived | ClientFailed | DeadlinePassed


@dataclass(frozen=True)
class SendModel:
    """Broadcast the model to ``client_ids``; updates are due by ``deadline_s``.

    ``round_idx`` is the round, or in a buffered run the model version sent.
    """

    round_idx: int
    client_ids: NDArray[np.int64]
    deadline_s: float | None


@dataclass(frozen=True)
class Accept:
    """Fold this client's update, times ``scale``, into the aggregate with ``weight``.

    ``staleness``: model versions since the client was sent the model, and ``scale``
    its discount ``s(staleness)`` (a buffered run); 0 and 1 in synchronous rounds.
    """

    client_id: int
    weight: float
    staleness: int = 0
    scale: float = 1.0


@dataclass(frozen=True)
class Reject:
    """Drop this client's update; ``late`` marks a deadline miss."""

    client_id: int
    reason: str
    late: bool = False


@dataclass(frozen=True)
class RoundOutcome:
    """Who took part in a round and how it ended.

    In a buffered run a "round" is a server step: ``selected`` counts the updates
    reported since the last step, ``late`` those rejected as too stale.
    """

    round_idx: int
    selected: int
    accepted: tuple[int, ...]
    failed: tuple[tuple[int, str], ...]
    late: tuple[int, ...]
    end_s: float
    applied: bool  # False when too few updates arrived to update the model


@dataclass(frozen=True)
class CloseRound:
    """The round is over: apply the aggregate if ``outcome.applied``."""

    outcome: RoundOutcome


Command = SendModel | Accept | Reject | CloseRound
