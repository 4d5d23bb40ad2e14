"""Who is connected to a center, and the bounded, logged wait before a round starts.

A participant is a client (it reaches one client) or an aggregator tier (it reaches the
clients it reports: in its ``Hello`` when it registers and in every partial it
submits). :class:`Roster` counts both; :meth:`Roster.gather` is the only wait of a
center before a round: for the expected participants at most ``start_timeout_s``, then
for the quorum of reachable clients, logging whom it waits for.

Ownership and cancellation: the roster owns no task; cancelling a :meth:`Roster.gather`
cancels the wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["Roster"]

log = logging.getLogger(__name__)


class Roster:
    """Connected participants and the clients each reaches."""

    def __init__(self) -> None:
        self._reach: dict[int, int] = {}
        self._early: dict[int, int] = {}  # reports that overtook their session's Hello
        self._changed = asyncio.Event()

    @property
    def participants(self) -> int:
        """Connected participants (clients and tiers)."""
        return len(self._reach)

    @property
    def reachable(self) -> int:
        """Clients reachable through the connected participants."""
        return sum(self._reach.values())

    def reach(self) -> dict[int, int]:
        """Every connected participant and the clients it reaches (a copy)."""
        return dict(self._reach)

    def describe(self) -> str:
        """``id:clients`` of every connected participant, for the logs."""
        return ", ".join(f"{p}:{n}" for p, n in sorted(self._reach.items())) or "none"

    def join(self, participant: int, reach: int) -> None:
        """``participant`` connected, reaching ``reach`` clients (1 for a client)."""
        self._reach[participant] = self._early.pop(participant, reach)
        self._changed.set()

    def report(self, participant: int, reach: int) -> None:
        """A connected tier now reaches ``reach`` clients (a report that arrives before
        the tier's session counts when the session does: the report is newer)."""
        if participant not in self._reach:  # its session is on its way (a reconnection)
            self._early[participant] = reach
            return
        if self._reach[participant] != reach:
            log.info("participant %d reaches %d clients", participant, reach)
            self._reach[participant] = reach
            self._changed.set()

    def leave(self, participant: int) -> None:
        """``participant`` disconnected."""
        if self._reach.pop(participant, None) is not None:
            self._changed.set()

    async def wait(self, ready: Callable[[], bool], timeout_s: float | None) -> bool:
        """Wait until ``ready()`` holds; False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                while not ready():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def gather(
        self,
        round_idx: int,
        *,
        expected: int,
        quorum: int,
        timeout_s: float | None,
        limit_s: float | None = None,
    ) -> bool:
        """Wait before round ``round_idx`` starts; True once the quorum is reachable.

        Args:
            round_idx: the round (for the logs).
            expected: participants to wait for, at most ``timeout_s`` (0: none).
            quorum: reachable clients needed.
            timeout_s: the wait for ``expected``, and how often the wait for the
                quorum is logged (None: no limit, logged once).
            limit_s: give up waiting for the quorum after this long (None: wait on).
        """
        if self.participants < expected:
            log.info(
                "round %d: waiting up to %s s for %d participants (%d connected: %s)",
                round_idx, timeout_s, expected, self.participants, self.describe(),
            )  # fmt: skip
            if not await self.wait(lambda: self.participants >= expected, timeout_s):
                log.warning(
                    "round %d: start timeout: %d of %d participants connected (%s)",
                    round_idx, self.participants, expected, self.describe(),
                )  # fmt: skip
        return await self._await_quorum(round_idx, quorum, timeout_s, limit_s)

    async def _await_quorum(
        self, round_idx: int, quorum: int, every_s: float | None, limit_s: float | None
    ) -> bool:
        loop = asyncio.get_running_loop()
        end = None if limit_s is None else loop.time() + limit_s
        while self.reachable < quorum:
            log.warning(
                "round %d: waiting for a quorum of %d reachable clients (%d now; %s)",
                round_idx, quorum, self.reachable, self.describe(),
            )  # fmt: skip
            left = None if end is None else max(0.0, end - loop.time())
            step = every_s if left is None else left if every_s is None else min(every_s, left)
            if await self.wait(lambda: self.reachable >= quorum, step):
                break
            if end is not None and loop.time() >= end:
                log.warning("round %d: no quorum after %s s", round_idx, limit_s)
                return False
        return True
