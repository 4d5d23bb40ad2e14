"""The mask pool: clients prepared ahead of time for upcoming rounds.

The first three steps of a round (setup, key advertisement, key sharing) do not
depend on the input, so they can run during the previous round's training; with
``SecAggConfig.precompute_masks`` the client also agrees every pairwise key and
expands every mask then. When the round's input is ready only one in-place add
is left on the critical path (Bonawitz et al., CCS 2017, section 7 notes the same
offline/online split). :class:`MaskPool` holds the prepared clients until their
round comes.
"""

from __future__ import annotations

from fedstrata.errors import ConfigError, ProtocolError
from fedstrata.secagg.client import ClientPhase, ClientProtocol

__all__ = ["MaskPool"]


class MaskPool:
    """Prepared clients keyed by ``(round_id, client_id)``.

    Args:
        capacity: most prepared clients held at once (each holds one mask vector
            of ``4 * vector_length`` bytes).

    Raises:
        ConfigError: ``capacity`` is below 1.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"MaskPool.capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._ready: dict[tuple[int, int], ClientProtocol] = {}

    def __len__(self) -> int:
        return len(self._ready)

    def put(self, round_id: int, client: ClientProtocol) -> None:
        """Store a client that has received its share bundle for ``round_id``.

        Raises:
            ProtocolError: the client is not ready (offline phase unfinished).
            ConfigError: the pool is full, or the client does not precompute masks.
        """
        if client.phase is not ClientPhase.READY:
            raise ProtocolError(
                f"client {client.client_id}: only ready clients go in the pool, phase is "
                f"{client.phase.value}"
            )
        if not client.config.precompute_masks:
            raise ConfigError("MaskPool needs SecAggConfig.precompute_masks=True")
        if len(self._ready) >= self.capacity:
            raise ConfigError(f"MaskPool is full (capacity {self.capacity})")
        self._ready[(round_id, client.client_id)] = client

    def take(self, round_id: int, client_id: int) -> ClientProtocol:
        """Remove and return the prepared client.

        Raises:
            ProtocolError: no client was prepared for that round.
        """
        try:
            return self._ready.pop((round_id, client_id))
        except KeyError:
            raise ProtocolError(
                f"client {client_id}: no prepared masks for round {round_id}"
            ) from None

    def discard_round(self, round_id: int) -> int:
        """Drop every client prepared for ``round_id`` (e.g. an aborted round)."""
        stale = [key for key in self._ready if key[0] == round_id]
        for key in stale:
            del self._ready[key]
        return len(stale)
