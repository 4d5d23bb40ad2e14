"""Downlink compression under FedBuff: a client is brought to the version it was
dispatched on, whatever the server has published since.

The simulator's FedBuff (:class:`~fedstrata.sim.hooks.CompressedBroadcast` driven by
:mod:`fedstrata.sim.async_engine`) encodes the downlink per dispatch: a client
dispatched on version ``v`` trains from the encoder's replica at ``v`` and downloads
the cheapest message from the version it holds to ``v`` (the deltas, or the full model
when it holds none, is further behind than ``downlink.history`` or the deltas would
outweigh the model); every server step publishes the new model to the encoder with
``RoundContext(new_version, seed)``. Over the wire a client downloads some time after
its dispatch, possibly after later steps, so :class:`VersionedDownlink` keeps, for each
version a client is in flight on, the encoder's history as it was at that version (its
replica and last deltas: :class:`~fedstrata.compress.downlink.DownlinkHistory`) and
answers from it. The encoder is the synchronous runtime's
(:class:`~fedstrata.runtime.downlink.DownlinkServer`), so keys, versions and seeds are
the simulator's and the clients' replicas are its replica bit for bit. No I/O here.
"""

from __future__ import annotations

import logging

from fedstrata.compress.downlink import DownlinkHistory
from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.errors import ProtocolError
from fedstrata.runtime.downlink import DownlinkAsk, DownlinkServer

__all__ = ["VersionedDownlink"]

log = logging.getLogger(__name__)


class _Pinned:
    """The encoder's history frozen at one version, and the messages built from it."""

    def __init__(self, history: DownlinkHistory) -> None:
        self.history = history
        self.messages: dict[int | None, bytes] = {}

    def message(self, held: int | None) -> bytes:
        v = self.history.version
        if held is not None and not 0 <= held <= v:
            log.warning("downlink: a client claims version %d, dispatched on %d", held, v)
            held = None
        data = self.messages.get(held)
        if data is None:
            data = self.history.message_for(held).to_bytes()
            self.messages[held] = data
        return data


class VersionedDownlink:
    """The center's downlink under FedBuff; see the module docstring.

    Args:
        server: the run's encoder (``downlink`` of the configuration).
        root_seed: the run's seed (the seed of every published version's encoding).
    """

    def __init__(self, server: DownlinkServer, root_seed: int) -> None:
        self.server, self.root_seed = server, root_seed
        self._pinned: dict[int, _Pinned] = {}

    def start(self, params: FloatVector) -> None:
        """Start a run from ``params`` (version 0)."""
        self.server.start(params)
        self._pinned.clear()

    def publish(self, params: FloatVector, version: int) -> None:
        """A server step made ``params``, the model of ``version``: encode its delta."""
        self.server.publish(params, RoundContext(version, self.root_seed))
        if self.server.version != version:
            raise ProtocolError(
                f"downlink: the encoder is at version {self.server.version}, the step "
                f"made version {version}"
            )

    def pin(self, version: int) -> None:
        """A client is dispatched on ``version`` (the current one): keep its history.

        Raises:
            ProtocolError: ``version`` is not the encoder's current version.
        """
        if version in self._pinned:
            return
        enc = self.server.encoder
        if enc.version != version:
            raise ProtocolError(
                f"downlink: dispatch on version {version}, the encoder is at {enc.version}"
            )
        frozen = DownlinkHistory(enc.replica, self.server.history, enc.version)
        frozen.load_state_dict(enc.state_dict())
        self._pinned[version] = _Pinned(frozen)

    def keep(self, versions: set[int]) -> None:
        """Forget the versions nobody is in flight on any more."""
        self._pinned = {v: p for v, p in self._pinned.items() if v in versions}

    def message(self, version: int, ask: DownlinkAsk) -> bytes:
        """The serialised message that brings a client at ``ask.version`` to ``version``.

        Raises:
            ProtocolError: nobody was dispatched on ``version``.
        """
        pinned = self._pinned.get(version)
        if pinned is None:
            raise ProtocolError(f"downlink: no client is in flight on version {version}")
        return pinned.message(ask.version)
