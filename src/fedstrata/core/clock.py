"""Injected clocks: the round logic never reads the system time directly."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "MonotonicClock", "VirtualClock"]


class Clock(Protocol):
    """Source of the current time in seconds."""

    def now(self) -> float: ...


class MonotonicClock:
    """Real time (``time.monotonic``), for the network runtime."""

    def now(self) -> float:
        return time.monotonic()


class VirtualClock:
    """Simulated time, advanced explicitly by the discrete-event loop."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = start_s

    def now(self) -> float:
        return self._now

    def advance_to(self, t_s: float) -> None:
        """Move time forward to ``t_s``; time never goes backwards."""
        if t_s < self._now:
            raise ValueError(f"VirtualClock cannot go back from {self._now} to {t_s}")
        self._now = t_s
