"""The tiers together: snapshot every round, persist in the background, restore the newest.

:class:`Checkpointer` saves a round's blob to each tier whose ``every_rounds`` divides
the round. The memory tier saves on the caller's thread (a SHA-256 pass, no copy); the
other tiers are handed to ONE background thread, so disk and network time stays off the
round's critical path. When a tier's previous snapshot is still queued (not yet being
written), the newer one replaces it: a slow object store falls behind by skipping
rounds, never by growing a queue of 40 MB blobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from fedstrata.checkpoint.format import CheckpointInfo
from fedstrata.checkpoint.store import CheckpointStore
from fedstrata.errors import CheckpointError, ConfigError

__all__ = ["Checkpointer", "Tier", "TierTimings"]

_log = logging.getLogger(__name__)
_SPEED = {"memory": 0, "disk": 1, "object": 2}


@dataclass(frozen=True)
class Tier:
    """One store and how often it is written (a round ``r`` with ``r % every_rounds == 0``)."""

    store: CheckpointStore
    every_rounds: int

    def __post_init__(self) -> None:
        every = self.every_rounds
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(
                f"every_rounds of the {self.store.tier} tier must be an int >= 1, got {every!r}"
            )

    def due(self, round_num: int) -> bool:
        """Whether round ``round_num`` is checkpointed in this tier."""
        return round_num % self.every_rounds == 0


@dataclass(frozen=True)
class TierTimings:
    """Save and restore figures of one tier (seconds; for metrics and the report).

    Attributes:
        tier: the tier's name.
        saves: completed saves.
        save_s: duration of the last save (None before the first).
        save_total_s: sum of every save's duration.
        last_round: round of the last completed save (None before the first).
        superseded: queued snapshots replaced by a newer one before being written.
        failures: saves that raised.
        restore_s: duration of the last restore from this tier (None if none).
    """

    tier: str
    saves: int = 0
    save_s: float | None = None
    save_total_s: float = 0.0
    last_round: int | None = None
    superseded: int = 0
    failures: int = 0
    restore_s: float | None = None


class Checkpointer:
    """Memory, disk and object tiers behind one ``snapshot`` / ``latest``.

    Owns one background thread (started here, stopped by :meth:`close`; also a context
    manager). A background save that fails is logged at ERROR and re-raised by the next
    :meth:`flush` or :meth:`close` as a :class:`~fedstrata.errors.CheckpointError`.
    """

    def __init__(
        self, tiers: Sequence[Tier], *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        names = [t.store.tier for t in tiers]
        if len(set(names)) != len(names):
            raise ConfigError(f"checkpoint tiers must have distinct names, got {names}")
        self.tiers = tuple(tiers)
        self._clock = clock
        self._timings = {name: TierTimings(name) for name in names}
        self._pending: dict[int, tuple[int, bytes]] = {}
        self._busy = False
        self._errors: list[CheckpointError] = []
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._worker, name="checkpointer", daemon=True)
        self._thread.start()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def timings(self) -> Mapping[str, TierTimings]:
        """Per-tier save/restore figures, a consistent copy."""
        with self._cond:
            return dict(self._timings)

    def _record_restore(self, tier: str, seconds: float) -> None:
        with self._cond:
            self._timings[tier] = replace(self._timings[tier], restore_s=seconds)

    def _save(self, tier: Tier, round_num: int, blob: bytes) -> None:
        name, start = tier.store.tier, self._clock()
        try:
            tier.store.save(round_num, blob)
        except Exception as exc:  # reported to the owner by flush(), never lost
            error = (
                exc
                if isinstance(exc, CheckpointError)
                else CheckpointError(f"{name} tier: {type(exc).__name__}: {exc}")
            )
            _log.error("round %d: %s checkpoint failed: %s", round_num, name, error)
            with self._cond:
                self._errors.append(error)
                old = self._timings[name]
                self._timings[name] = replace(old, failures=old.failures + 1)
            return
        elapsed = self._clock() - start
        with self._cond:
            old = self._timings[name]
            self._timings[name] = replace(
                old,
                saves=old.saves + 1,
                save_s=elapsed,
                save_total_s=old.save_total_s + elapsed,
                last_round=round_num,
            )

    def snapshot(self, round_num: int, blob: bytes) -> None:
        """Checkpoint round ``round_num`` in every tier it is due in.

        The memory tier is written before this returns; the others are queued for the
        background thread (replacing that tier's queued older round, if any).

        Raises:
            CheckpointError: the checkpointer is closed.
        """
        if self._closed:
            raise CheckpointError("snapshot() on a closed Checkpointer")
        for index, tier in enumerate(self.tiers):
            if not tier.due(round_num):
                continue
            if tier.store.tier == "memory":
                self._save(tier, round_num, blob)
                continue
            with self._cond:
                if index in self._pending:
                    old = self._timings[tier.store.tier]
                    self._timings[tier.store.tier] = replace(old, superseded=old.superseded + 1)
                self._pending[index] = (round_num, blob)
                self._cond.notify_all()

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                index = min(self._pending)
                round_num, blob = self._pending.pop(index)
                self._busy = True
            try:
                self._save(self.tiers[index], round_num, blob)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def flush(self) -> None:
        """Wait until every queued snapshot is written.

        Raises:
            CheckpointError: a background save failed since the last flush (the first
                failure; the others are in the log).
        """
        with self._cond:
            while (self._pending or self._busy) and self._thread.is_alive():
                self._cond.wait()
            errors, self._errors = self._errors, []
        if errors:
            raise CheckpointError(
                f"{len(errors)} background checkpoint save(s) failed; first: {errors[0]}"
            ) from errors[0]

    def close(self) -> None:
        """Write what is queued, stop the background thread, close every store.

        Raises:
            CheckpointError: as :meth:`flush`.
        """
        if self._closed:
            return
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join()
            for tier in self.tiers:
                tier.store.close()

    def _candidates(self) -> list[tuple[CheckpointInfo, Tier]]:
        found: list[tuple[CheckpointInfo, Tier]] = []
        for tier in self.tiers:
            try:
                found += [(info, tier) for info in tier.store.list()]
            except CheckpointError as exc:
                _log.warning("cannot list the %s checkpoint tier: %s", tier.store.tier, exc)
        found.sort(key=lambda pair: (-pair[0].round, _SPEED.get(pair[1].store.tier, 3)))
        return found

    def latest(self) -> tuple[CheckpointInfo, bytes] | None:
        """The newest checkpoint that verifies in any tier (the fastest tier on a tie).

        Corrupt or unreadable checkpoints are skipped with a WARNING; the restore's
        duration is recorded in :attr:`timings` under the tier it came from.
        """
        for info, tier in self._candidates():
            start = self._clock()
            try:
                blob = tier.store.load(info.round)
            except CheckpointError as exc:
                _log.warning(
                    "checkpoint of round %d (%s tier) is unusable, falling back to an "
                    "older one: %s",
                    info.round,
                    tier.store.tier,
                    exc,
                )
                continue
            self._record_restore(tier.store.tier, self._clock() - start)
            return info, blob
        return None
