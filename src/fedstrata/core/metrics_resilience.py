"""The resilience family of the typed per-round records (:mod:`fedstrata.core.metrics`
lists every family): checkpoint times per tier, center failovers and recovery
(issue 15 part 6; docs/resilience.md, docs/resilience-failover.md).

Written by the simulator when ``checkpoint.enabled`` (the checkpoint tiers' save times)
and by the runtime's center nodes (``failover.enabled``: the round's commit, the tiers'
save times, the failovers so far and, in the first round of a new term, how long the
federation had no center and how long the checkpoint took to load).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedstrata.core.stats_record import StatsRecord

__all__ = ["ResilienceStats"]


@dataclass(frozen=True)
class ResilienceStats(StatsRecord):
    """Checkpoints and failovers as of one round; every time in real seconds.

    Attributes:
        ckpt_memory_s: duration of the memory tier's newest save completed since the
            previous round's record (None: none completed).
        ckpt_disk_s: the same for the local-disk tier.
        ckpt_object_s: the same for the object-storage tier.
        ckpt_critical_s: seconds a checkpoint held the round up: the simulator's
            snapshot on the round's path (of the previous round: it is taken after the
            round's record), the center's commit of this round (snapshot and durable
            write; its acknowledgements wait for it). None: no checkpoint yet.
        failovers: center takeovers in the run so far (None: not a center node).
        recovery_s: first round of a term that took over a lapsed lease: seconds from
            the last lease renewal the new center saw (the old one died after it) to
            this round opening (None: not such a round).
        restore_s: that round's checkpoint load time (None: not such a round).
    """

    FAMILY: ClassVar[str] = "resilience"
    INTS: ClassVar[frozenset[str]] = frozenset({"failovers"})
    PREFIX: ClassVar[str] = "resilience_"

    ckpt_memory_s: float | None = None
    ckpt_disk_s: float | None = None
    ckpt_object_s: float | None = None
    ckpt_critical_s: float | None = None
    failovers: int | None = None
    recovery_s: float | None = None
    restore_s: float | None = None
