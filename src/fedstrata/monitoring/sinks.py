"""The sink protocol, an in-memory sink, and a fan-out that isolates failing sinks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from fedstrata.errors import ConfigError
from fedstrata.monitoring.events import MetricEvent

__all__ = ["Fanout", "MemorySink", "Sink"]

logger = logging.getLogger(__name__)


class Sink(Protocol):
    """Receives metric events. ``close`` flushes and releases; it is idempotent."""

    def emit(self, event: MetricEvent) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps every event in a list (for tests and notebooks)."""

    def __init__(self) -> None:
        self.events: list[MetricEvent] = []
        self.closed = False

    def emit(self, event: MetricEvent) -> None:
        """Append ``event``."""
        self.events.append(event)

    def close(self) -> None:
        """Mark closed; events stay readable."""
        self.closed = True


class Fanout:
    """Sends each event to many sinks; a sink that raises never stops the others.

    A failing sink is logged at WARNING and keeps receiving events; after
    ``disable_after`` consecutive failures it is dropped (one more WARNING), so a dead
    exporter cannot flood the log. ``BaseException``s that are not ``Exception``s
    (KeyboardInterrupt, SystemExit) propagate.
    """

    def __init__(self, sinks: Sequence[Sink], disable_after: int | None = 10) -> None:
        """Build a fan-out.

        Args:
            sinks: the sinks, in emission order.
            disable_after: consecutive failures after which a sink is dropped; None: never.

        Raises:
            ConfigError: ``disable_after`` is not None or an int >= 1.
        """
        if disable_after is not None and (
            isinstance(disable_after, bool)
            or not isinstance(disable_after, int)
            or disable_after < 1
        ):
            rule = "must be None or an int >= 1"
            raise ConfigError(f"Fanout: disable_after={disable_after!r} is invalid: {rule}")
        self._sinks = list(sinks)
        self._failures = [0] * len(self._sinks)
        self._disabled = [False] * len(self._sinks)
        self._disable_after = disable_after
        self._closed = False

    @property
    def active_sinks(self) -> list[Sink]:
        """The sinks still receiving events."""
        return [s for s, off in zip(self._sinks, self._disabled, strict=True) if not off]

    def emit(self, event: MetricEvent) -> None:
        """Send ``event`` to every active sink, in order."""
        for i, sink in enumerate(self._sinks):
            if self._disabled[i]:
                continue
            try:
                sink.emit(event)
            except Exception:
                self._record_failure(i, sink, event)
            else:
                self._failures[i] = 0

    def _record_failure(self, i: int, sink: Sink, event: MetricEvent) -> None:
        self._failures[i] += 1
        kind = type(event).__name__
        round_idx = getattr(event, "round_idx", None)
        logger.warning(
            "metric sink %r failed on %s (round %s); continuing without it for this event",
            sink,
            kind,
            round_idx,
            exc_info=True,
        )
        if self._disable_after is not None and self._failures[i] >= self._disable_after:
            self._disabled[i] = True
            logger.warning(
                "metric sink %r failed %d times in a row; it is disabled for this run",
                sink,
                self._failures[i],
            )

    def close(self) -> None:
        """Close every sink (disabled ones too), isolating failures. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                logger.warning("metric sink %r failed to close", sink, exc_info=True)

    def __enter__(self) -> Fanout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
