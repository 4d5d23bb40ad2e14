"""The system family of the typed per-round records (:mod:`fedstrata.core.metrics`
lists every family): what the devices and links did in a round, the raw figures the
twelve federation metrics (:mod:`fedstrata.monitoring.catalogue`) are computed from.

Every driver that knows a figure records it where it knows it (the simulator's flat,
tree and FedBuff drivers, the runtime center); a figure a driver cannot know is
``None`` and the metrics built on it are then not applicable (``docs/monitoring.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedstrata.core.stats_record import StatsRecord

__all__ = ["SystemStats"]


@dataclass(frozen=True)
class SystemStats(StatsRecord):
    """Devices, links and failures in one round, as the engine measured them.

    Times are on the run's clock: simulated seconds in the simulator, real seconds
    since the run started in the runtime.

    Attributes:
        devices: devices selected for the round (the cohort).
        dense_bytes: bytes the round's model downloads and uploads would take as dense
            float32 (one model per download and per upload counted in ``bytes_*``).
        busy_s: seconds the selected devices spent computing, summed over them (a
            device that failed before training counts 0).
        flops: floating-point operations the devices performed (examples trained x
            the model's FLOPs per example; None: not known).
        peak_flops: the selected devices' peak FLOP/s, summed (None: no device
            profiles, as in the runtime without them).
        link_bytes: bytes carried by the transfers counted in ``transfer_s``.
        link_capacity_bytes: bytes the devices' links could have carried in the
            seconds they spent transferring (bandwidth x transfer time, summed over
            transfers; None: link bandwidths unknown).
        transfer_s: seconds spent transferring, summed over transfers.
        contention_s: of ``transfer_s``, seconds transfers waited for a shared,
            over-subscribed link (a tree's fair-shared ingress) beyond what their own
            link needed.
        failure_at_s: when the round's first failure (a dropout, an invalid or late
            update) happened, on the run's clock (None: no failure).
        recovered_at_s: when the first update accepted after that failure arrived, in
            this round (None: none in this round).
        first_accept_s: when the round's first accepted update arrived (None: none).
    """

    FAMILY: ClassVar[str] = "system"
    INTS: ClassVar[frozenset[str]] = frozenset({"devices", "dense_bytes", "link_bytes"})
    PREFIX: ClassVar[str] = "system_"

    devices: int
    dense_bytes: int
    busy_s: float
    transfer_s: float
    contention_s: float = 0.0
    link_bytes: int = 0
    flops: float | None = None
    peak_flops: float | None = None
    link_capacity_bytes: float | None = None
    failure_at_s: float | None = None
    recovered_at_s: float | None = None
    first_accept_s: float | None = None
