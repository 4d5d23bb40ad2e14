"""A connection to whichever of several parents is serving (issue 15 part 4).

:class:`FailoverLink` holds an ordered list of targets and, for each session, connects
to the first that accepts a connection:

* a client or an aggregator tier of the center lists the center nodes (the active one
  and its standbys, :mod:`fedstrata.runtime.standby`); a standby does not listen until
  it takes over, so whichever listens is the active one;
* a client of an edge aggregator lists its edge, then standby edges, then the edge's
  parent: when its edge dies (its session breaks or misses its keepalive pings) the
  client *re-homes* to the first standby that listens, else to the parent, for the
  next round; when its own edge is back it returns to it at its next reconnection.

A target that refuses the connection is skipped at once (the channel reports a
transient failure); one that does not answer is given ``probe_s``. The list is tried
over and over, ``pause_s`` apart, for at most ``connect_timeout_s`` before the session
fails with :class:`~fedstrata.errors.TransportError` (the caller's backoff then
applies). Each switch is logged at WARNING and counted in :attr:`FailoverLink.switches`.

It has the methods of :class:`~fedstrata.runtime.client_link.CenterLink` and
:class:`~fedstrata.runtime.parent_link.ParentLink`; every call goes to the target of
the current session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType

from fedstrata.core.payload import Payload
from fedstrata.errors import ConfigError, TransportError
from fedstrata.runtime.center import TaskSpec
from fedstrata.runtime.downlink import DownlinkAsk
from fedstrata.runtime.link import GrpcLink
from fedstrata.runtime.parent_link import session_of
from fedstrata.runtime.sched_reports import DeviceReport, RoundTimings
from fedstrata.runtime.tier_work import MemberReport

__all__ = ["FailoverLink", "NoTargetError", "Switch"]

log = logging.getLogger(__name__)

MakeLink = Callable[[str], GrpcLink]
"""Builds the (not yet entered) link to one target."""


class NoTargetError(TransportError):
    """No target accepted a connection within the link's ``connect_timeout_s``."""


class Switch:
    """One change of target: when (``time.monotonic()``), from where, to where."""

    __slots__ = ("at", "source", "target")

    def __init__(self, at: float, source: str | None, target: str) -> None:
        self.at, self.source, self.target = at, source, target

    def __repr__(self) -> str:
        return f"Switch({self.source} -> {self.target} at {self.at:.3f})"


class FailoverLink:
    """A link to the first of ``targets`` that serves; see the module docstring.

    Args:
        targets: ``host:port`` of each parent, in order of preference.
        make: builds the link to one target (credentials, chunks, timeouts).
        connect_timeout_s: how long one session may search the list.
        probe_s: how long one target may take to connect.
        pause_s: pause between passes over the list.

    Raises:
        ConfigError: no targets, or a non-positive duration.
    """

    def __init__(
        self,
        targets: Sequence[str],
        make: MakeLink,
        *,
        connect_timeout_s: float = 20.0,
        probe_s: float = 2.0,
        pause_s: float = 0.1,
    ) -> None:
        if not targets:
            raise ConfigError("FailoverLink needs at least one target")
        if min(connect_timeout_s, probe_s, pause_s) <= 0:
            raise ConfigError(
                "FailoverLink durations must be > 0, got "
                f"connect_timeout_s={connect_timeout_s}, probe_s={probe_s}, pause_s={pause_s}"
            )
        self.targets, self.make = list(targets), make
        self.connect_timeout_s, self.probe_s, self.pause_s = connect_timeout_s, probe_s, pause_s
        self.switches: list[Switch] = []
        self.run_id = ""
        self._pending_live: int | None = None  # a tier's report made while searching
        self._link: GrpcLink | None = None
        self._target: str | None = None

    @property
    def target(self) -> str | None:
        """The target of the current (or last) session (None: none yet)."""
        return self._target

    async def __aenter__(self) -> FailoverLink:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._drop()

    async def _drop(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            self.run_id = link.run_id or self.run_id
            await link.close()

    async def reconnect(self) -> None:
        """Drop the current connection; the next session searches the list again."""
        await self._drop()

    async def _settle(self) -> GrpcLink:
        """Connect to the first target that serves, searching for ``connect_timeout_s``."""
        if self._link is not None:
            return self._link
        end = time.monotonic() + self.connect_timeout_s
        while True:
            for target in self.targets:
                link = await self.make(target).__aenter__()
                if await link.probe(min(self.probe_s, max(0.01, end - time.monotonic()))):
                    return self._adopt(link, target)
                await link.close()
            if time.monotonic() + self.pause_s >= end:
                limit = f"{self.connect_timeout_s:g} s"
                raise NoTargetError(f"none of {self.targets} accepted a connection in {limit}")
            await asyncio.sleep(self.pause_s)

    def _adopt(self, link: GrpcLink, target: str) -> GrpcLink:
        if target != self._target:
            level = logging.INFO if self._target is None else logging.WARNING
            was = self._target
            log.log(level, "link %d: now connected to %s (was %s)", link.client_id, target, was)
            self.switches.append(Switch(time.monotonic(), self._target, target))
        # a new connection starts without a run: the parent may be a new center term
        # (its first task names the run), and a tier's live-client reports made before
        # that task must not carry the previous term's id (the new center ignores them)
        self.run_id = link.run_id = ""
        self._link, self._target = link, target
        return link

    async def session(
        self,
        live_clients: int = 0,
        profile: DeviceReport | None = None,
        node: str = "",
        *,
        profiles: Mapping[int, DeviceReport] | None = None,
    ) -> AsyncIterator[TaskSpec]:
        """The tasks of a session with the first target that serves (``node``: an
        aggregator tier's node of the tree, named in its hello).

        Raises:
            TransportError: no target served within ``connect_timeout_s``, or the
                session broke.
            ProtocolError: the target refused the session.
        """
        link = await self._settle()
        if self._pending_live is not None:  # reported while searching: newer
            live_clients, self._pending_live = self._pending_live, None
        try:
            tasks = session_of(link, live_clients, profile, node, profiles)
            async for task in tasks:
                self.run_id = link.run_id
                yield task
        except TransportError:
            await self._drop()
            raise

    def _current(self) -> GrpcLink:
        if self._link is None:
            raise TransportError("FailoverLink: no session is open")
        return self._link

    async def download(self, round_idx: int) -> Payload:
        return await self._current().download(round_idx)

    async def download_downlink(self, round_idx: int, ask: DownlinkAsk) -> bytes:
        return await self._current().download_downlink(round_idx, ask)

    async def download_eval(self, round_idx: int) -> Payload:
        return await self._current().download_eval(round_idx)

    async def submit_eval(self, round_idx: int, report: bytes) -> tuple[bool, str]:
        return await self._current().submit_eval(round_idx, report)

    async def submit(
        self,
        round_idx: int,
        payload: Payload,
        num_examples: int,
        metrics: Mapping[str, float],
        timings: RoundTimings | None = None,
    ) -> tuple[bool, str]:
        return await self._current().submit(round_idx, payload, num_examples, metrics, timings)

    async def secagg_step(
        self,
        round_idx: int,
        phase: int,
        data: bytes,
        *,
        metrics: Mapping[str, float] | None = None,
        support_seed: int = 0,
        timings: RoundTimings | None = None,
        num_examples: int = 0,
    ) -> tuple[bool, str, bytes]:
        return await self._current().secagg_step(
            round_idx, phase, data, metrics=metrics, support_seed=support_seed, timings=timings,
            num_examples=num_examples,
        )  # fmt: skip

    async def submit_partial(
        self,
        round_idx: int,
        data: bytes,
        live_clients: int = 0,
        *,
        reports: Sequence[MemberReport] = (),
        profiles: Mapping[int, DeviceReport] | None = None,
    ) -> tuple[bool, str]:
        return await self._current().submit_partial(
            round_idx, data, live_clients, reports=reports, profiles=profiles
        )

    async def report_live(self, live_clients: int) -> None:
        """A tier's connected clients; while no session is open (the list is being
        searched) the number is kept and sent in the next session's ``Hello``."""
        if self._link is None:
            self._pending_live = live_clients
            return
        await self._link.report_live(live_clients)
