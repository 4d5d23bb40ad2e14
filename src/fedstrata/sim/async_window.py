"""A FedBuff server step's figures: what happened since the last step, as metrics.

The coordinator's :class:`~fedstrata.coordinator.RoundOutcome` says who reported
(accepted, failed, too stale); the :class:`StepWindow` adds what the simulator moved
and measured meanwhile (bytes, examples, staleness, seconds), and
:func:`step_metrics` makes the step's :class:`~fedstrata.monitoring.RoundMetrics`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedstrata.coordinator import RoundOutcome
from fedstrata.coordinator.cadence import Evaluation
from fedstrata.coordinator.round_metrics import (
    ClientCounts,
    RoundFigures,
    codec_stats,
    round_metrics,
)
from fedstrata.core.metrics import AsyncStats, precision_stats
from fedstrata.monitoring import RoundMetrics

__all__ = ["StepWindow", "step_metrics"]


@dataclass
class StepWindow:
    """Figures accumulated since the last server step.

    Attributes:
        start_s: virtual time the window opened.
        wall0: ``time.perf_counter()`` when it opened.
        examples: examples trained by the accepted clients.
        taus: staleness of each accepted update.
        losses: the accepted clients' training losses.
        bytes_up: uploaded bytes (usable results).
        bytes_down: downloaded bytes (dispatches).
        uploads: usable results received.
        dispatched: clients sent the model.
        decode_s: server seconds decoding payloads.
        encode_s: the accepted clients' encode seconds.
        last: legs (download, compute, upload seconds) of the last accepted client.
        folded_metrics: the accepted clients' training metrics.
    """

    start_s: float
    wall0: float
    examples: int = 0
    taus: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    uploads: int = 0
    dispatched: int = 0
    decode_s: float = 0.0
    encode_s: list[float] = field(default_factory=list)
    last: tuple[float, float, float] = (0.0, 0.0, 0.0)
    folded_metrics: list[Mapping[str, float]] = field(default_factory=list)


def _fedbuff_stats(w: StepWindow, span: float, in_flight: int) -> AsyncStats:
    taus = np.asarray(w.taus, dtype=np.float64)
    return AsyncStats(
        staleness_mean=float(taus.mean()) if taus.size else 0.0,
        staleness_max=float(taus.max()) if taus.size else 0.0,
        in_flight=in_flight,
        throughput_eps=w.examples / span if span > 0 else 0.0,
        last_client_s=float(sum(w.last)),
    )


def step_metrics(
    outcome: RoundOutcome,
    w: StepWindow,
    ev: Evaluation,
    *,
    now_s: float,
    in_flight: int,
    size: int,
) -> RoundMetrics:
    """The metrics of the server step ``outcome`` closed at virtual time ``now_s``
    (``ev``: its central evaluation; ``size``: model entries)."""
    span = now_s - w.start_s
    client_means = {"encode_s": float(np.mean(w.encode_s))} if w.encode_s else {}
    codec = codec_stats(
        uploads=w.uploads, size=size, bytes_up=w.bytes_up, bytes_down=w.bytes_down,
        receivers=w.dispatched, decode_s=w.decode_s, client_means=client_means,
    )  # fmt: skip
    train_loss = float(np.mean(w.losses)) if w.losses else None
    wall_s = time.perf_counter() - w.wall0
    # no critical path (zero legs): clients overlap server steps
    figures = RoundFigures(train_loss, w.bytes_up, w.bytes_down, span, now_s, wall_s)
    fedbuff = _fedbuff_stats(w, span, in_flight)
    precision = precision_stats(w.folded_metrics)
    counts = ClientCounts.of(outcome)
    return round_metrics(outcome.round_idx, counts, ev, figures, codec, fedbuff, precision)
