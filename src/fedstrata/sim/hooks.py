"""Extension points of the simulator's round: broadcast and client planning.

A :class:`Broadcaster` decides what model the clients train from and how many bytes
each client's download costs (the dense model, or compressed deltas since the
version the client holds). A :class:`ClientPlanner` sizes each client's work. The
server-side round hook (the privacy budget allocator, secure aggregation's costs) is
every driver's: :class:`fedstrata.coordinator.hooks.RoundHook`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fedstrata.compress import CompressionSpec, DownlinkEncoder
from fedstrata.coordinator.hooks import Publisher
from fedstrata.core.context import RoundContext
from fedstrata.core.metrics import ScheduleStats
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import HEADER_SIZE
from fedstrata.core.statepart import StatePart
from fedstrata.core.training import LocalPlan
from fedstrata.scheduling.planner import ClientReport

__all__ = [
    "Broadcaster",
    "ClientPlanner",
    "ClientReport",
    "CompressedBroadcast",
    "DenseBroadcast",
]


class ClientPlanner(Protocol):
    """Sizes each client's work per round and learns from what happened.

    The heterogeneity-aware scheduler implements it: predict each device's time, give
    slow devices less work so everyone meets the deadline, record actual times.
    """

    def admit(self, round_idx: int, available: NDArray[np.int64]) -> NDArray[np.int64]:
        """The available clients the coordinator may draw from (e.g. less the devices
        predicted to miss the deadline), before it selects the cohort."""
        ...

    def plans(
        self, round_idx: int, cohort: NDArray[np.int64], default: LocalPlan
    ) -> Sequence[LocalPlan]:
        """One plan per cohort member, in cohort order."""
        ...

    def observe(
        self, round_idx: int, reports: Sequence[ClientReport], round_s: float
    ) -> ScheduleStats | None:
        """Learn from the round; returns its ``RoundMetrics.schedule`` (None: no plan)."""
        ...


class Broadcaster(Publisher, Protocol):
    """What the clients receive at the start of a round, and what it costs (told of
    every new model by the server step: ``publish``)."""

    def model_for_clients(self, params: FloatVector) -> FloatVector: ...

    def download_bytes(self, client_id: int) -> int:
        """Bytes client ``client_id`` downloads this round (and it is then up to date)."""
        ...


class DenseBroadcast:
    """Every client downloads the whole float32 model."""

    def __init__(self, size: int) -> None:
        self._nbytes = HEADER_SIZE + 4 * size

    def model_for_clients(self, params: FloatVector) -> FloatVector:
        return params

    def download_bytes(self, client_id: int) -> int:
        return self._nbytes

    def publish(self, params: FloatVector, ctx: RoundContext) -> None:
        """Nothing to prepare."""

    def state_dict(self) -> StatePart:
        """Nothing to checkpoint."""
        return StatePart()

    def load_state_dict(self, part: StatePart) -> None:
        """Nothing to restore."""


class CompressedBroadcast:
    """Clients download compressed deltas since the model version they hold.

    Clients train from the encoder's replica (the model as clients reconstruct it);
    the server keeps the exact model and applies the clients' deltas to it. Memory:
    the encoder's history plus one version number per client that has taken part.
    """

    def __init__(self, initial: FloatVector, spec: CompressionSpec, history: int = 8) -> None:
        self.encoder = DownlinkEncoder(initial, spec, history)
        self._held: dict[int, int] = {}

    def model_for_clients(self, params: FloatVector) -> FloatVector:
        return self.encoder.replica

    def download_bytes(self, client_id: int) -> int:
        message = self.encoder.message_for(self._held.get(client_id))
        self._held[client_id] = self.encoder.version
        return message.nbytes

    def publish(self, params: FloatVector, ctx: RoundContext) -> None:
        self.encoder.publish(params, ctx)

    def state_dict(self) -> StatePart:
        """The encoder's state and the version each client holds."""
        enc = self.encoder.state_dict()
        held = sorted(self._held.items())
        arrays = {**enc.arrays, "held": np.asarray(held, dtype=np.int64).reshape(-1, 2)}
        return StatePart(meta=enc.meta, arrays=arrays)

    def load_state_dict(self, part: StatePart) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            CheckpointCorrupt: the part does not fit this broadcaster's model.
        """
        self.encoder.load_state_dict(part)
        self._held = {int(c): int(v) for c, v in part.array("held").reshape(-1, 2)}
