"""A FedBuff server step's figures: what happened since the last step, as metrics.

The coordinator's :class:`~fedstrata.coordinator.RoundOutcome` says who reported
(accepted, failed, too stale); the :class:`StepWindow` adds what the simulator moved
and measured meanwhile (bytes, examples, staleness, seconds), and
:func:`step_metrics` makes the step's :class:`~fedstrata.monitoring.RoundMetrics`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
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
from fedstrata.core.metrics import AsyncStats, SystemStats, precision_stats
from fedstrata.monitoring import RoundMetrics
from fedstrata.monitoring.devices import RoundDetail
from fedstrata.sim.intake import system_tally
from fedstrata.sim.profiles import ProfileTable

__all__ = ["Flying", "Reported", "StepWindow", "step_metrics"]


@dataclass(frozen=True)
class Flying:
    """A client still training (or transferring) when a step closes."""

    client_id: int
    compute_start_s: float
    compute_s: float
    examples: int


@dataclass(frozen=True)
class Reported:
    """A client that reported in the window: when it started, its legs and bytes,
    whether its update was folded and when it arrived."""

    client_id: int
    start_s: float
    legs: tuple[float, float, float]
    down_bytes: int
    up_bytes: int
    examples: int
    folded: bool
    at_s: float


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
        reported: the clients that reported (the step's devices), in arrival order.
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
    reported: list[Reported] = field(default_factory=list)


def _fedbuff_stats(w: StepWindow, span: float, in_flight: int) -> AsyncStats:
    taus = np.asarray(w.taus, dtype=np.float64)
    return AsyncStats(
        staleness_mean=float(taus.mean()) if taus.size else 0.0,
        staleness_max=float(taus.max()) if taus.size else 0.0,
        in_flight=in_flight,
        throughput_eps=w.examples / span if span > 0 else 0.0,
        last_client_s=float(sum(w.last)),
    )


def _system(
    w: StepWindow, flying: Sequence[Flying], profiles: ProfileTable, fpe: float, *,
    size: int, now_s: float,
) -> tuple[SystemStats, RoundDetail]:  # fmt: skip
    """The step's devices (the clients that reported in it or are still in flight)
    and links; only training inside the window counts as busy."""
    ids = [r.client_id for r in w.reported] + [f.client_id for f in flying]
    tally = system_tally(profiles, w.start_s, list(dict.fromkeys(ids)), size)
    for f in flying:
        tally.trained(f.client_id, f.compute_start_s, f.compute_s, f.examples * fpe)
    for r in w.reported:
        cid, (down, compute, up) = r.client_id, r.legs
        tally.transfer(cid, r.down_bytes, down, up=False, bandwidth_bps=profiles.downlink_bps[cid])
        if r.up_bytes:
            tally.trained(cid, r.start_s + down, compute, r.examples * fpe)
            tally.transfer(cid, r.up_bytes, up, up=True, bandwidth_bps=profiles.uplink_bps[cid])
        if r.folded:
            tally.accepted(cid, r.at_s)
        else:
            tally.failed(cid, r.at_s)
    stats, devices = tally.finish(now_s)
    return stats, RoundDetail(0, devices)


def step_metrics(
    outcome: RoundOutcome,
    w: StepWindow,
    ev: Evaluation,
    *,
    now_s: float,
    in_flight: int,
    size: int,
    profiles: ProfileTable,
    fpe: float,
    flying: Sequence[Flying] = (),
) -> tuple[RoundMetrics, RoundDetail]:
    """The metrics and per-device detail of the server step ``outcome`` closed at
    virtual time ``now_s`` (``ev``: its central evaluation; ``size``: model entries;
    ``profiles`` and ``fpe``, the model's FLOPs per example: the devices' figures;
    ``flying``: the clients still out, busy in the window too)."""
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
    system, detail = _system(w, flying, profiles, fpe, size=size, now_s=now_s)
    metrics = round_metrics(
        outcome.round_idx, counts, ev, figures, codec, fedbuff, precision, system
    )
    return metrics, RoundDetail(outcome.round_idx, detail.devices)
