"""Extension points of the simulator's round: broadcast and server-side round hooks.

A :class:`Broadcaster` decides what model the clients train from and how many bytes
each client's download costs (the dense model, or compressed deltas since the
version the client holds). A :class:`RoundHook` joins every round on the server — the
privacy budget allocator uses it to refuse a round that would overspend, to add
central noise to the aggregate, and to report the budget spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from fedstrata.compress import CompressionSpec, DownlinkEncoder
from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import HEADER_SIZE

__all__ = ["Broadcaster", "CompressedBroadcast", "DenseBroadcast", "RoundHook"]


class RoundHook(Protocol):
    """Server-side participant in every round."""

    def start(self, round_idx: int) -> None:
        """Called before a round; raise ``PrivacyBudgetExhausted`` to stop training."""
        ...

    def aggregate(self, mean: FloatVector, accepted: int, ctx: RoundContext) -> FloatVector:
        """Transform the round's aggregate (``accepted`` updates) before the server step."""
        ...

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> Mapping[str, float]:
        """After the server step and evaluation (``loss``: test loss or None).

        Returns figures for ``RoundMetrics.extras``.
        """
        ...


class Broadcaster(Protocol):
    """What the clients receive at the start of a round, and what it costs."""

    def model_for_clients(self, params: FloatVector) -> FloatVector: ...

    def download_bytes(self, client_id: int) -> int:
        """Bytes client ``client_id`` downloads this round (and it is then up to date)."""
        ...

    def publish(self, params: FloatVector, ctx: RoundContext) -> None:
        """The server has a new model."""
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
