"""The record of a round every driver writes, and the events it sends.

The simulator's drivers (flat, tree, FedBuff) and the gRPC runtime's run directory
(:mod:`fedstrata.runtime.recorder`) build a round's
:class:`~fedstrata.monitoring.RoundMetrics` here: who took part (from the round's
outcome, or a FedBuff step's arrivals), the central evaluation
(:func:`fedstrata.coordinator.cadence.evaluate_round`), the figures the driver
measured (bytes, seconds) and the typed records of the round (codec figures from
:func:`codec_stats`, tiers, FedBuff, secure aggregation); then they send the client
failures and the metrics to the sinks (:func:`emit_events`). No I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fedstrata.coordinator.cadence import Evaluation
from fedstrata.coordinator.events import RoundOutcome
from fedstrata.coordinator.round_logic import dense_bytes
from fedstrata.core.metrics import AnyStats, CodecStats
from fedstrata.monitoring import ClientFailure, RoundMetrics, Sink
from fedstrata.monitoring.devices import RoundDetail

__all__ = [
    "ClientCounts",
    "RoundFigures",
    "codec_stats",
    "emit_events",
    "emit_round",
    "round_metrics",
]


@dataclass(frozen=True)
class ClientCounts:
    """Who took part in a round: selected, and of them completed, failed or late."""

    selected: int
    completed: int
    failed: int
    late: int

    @classmethod
    def of(cls, outcome: RoundOutcome) -> ClientCounts:
        """The counts of a synchronous round's outcome."""
        return cls(outcome.selected, len(outcome.accepted), len(outcome.failed), len(outcome.late))


@dataclass(frozen=True)
class RoundFigures:
    """What a driver measured in a round.

    Attributes:
        train_loss: the clients' mean training loss, or None.
        bytes_up: bytes the clients (and the protocol) sent.
        bytes_down: bytes sent to the clients.
        round_s: the round's duration (simulated; the runtime's is real).
        time_s: the run's time at the round's end.
        wall_s: wall seconds the round took.
        legs: the critical path's (downlink, compute, uplink) seconds (zeros: none).
    """

    train_loss: float | None
    bytes_up: int
    bytes_down: int
    round_s: float
    time_s: float
    wall_s: float
    legs: tuple[float, float, float] = (0.0, 0.0, 0.0)


def round_metrics(
    round_idx: int,
    counts: ClientCounts,
    ev: Evaluation,
    figures: RoundFigures,
    *records: AnyStats | None,
) -> RoundMetrics:
    """The round's metrics, with each typed record in its family's field.

    Raises:
        DataError: inconsistent figures, or two records of one family.
    """
    down_s, compute_s, up_s = figures.legs
    metrics = RoundMetrics(
        round_idx=round_idx,
        accuracy=ev.accuracy,
        loss=ev.loss,
        train_loss=figures.train_loss,
        clients_selected=counts.selected,
        clients_completed=counts.completed,
        clients_failed=counts.failed,
        clients_late=counts.late,
        bytes_up=figures.bytes_up,
        bytes_down=figures.bytes_down,
        sim_round_s=figures.round_s,
        sim_time_s=figures.time_s,
        wall_round_s=figures.wall_s,
        compute_s=compute_s,
        downlink_s=down_s,
        uplink_s=up_s,
        extras=ev.extras or {},
    )
    return metrics.with_stats(*records)


def emit_round(
    outcome: RoundOutcome,
    metrics: RoundMetrics,
    sinks: Sequence[Sink],
    on_round: Callable[[RoundMetrics], None] | None,
    *,
    detail: RoundDetail | None = None,
) -> None:
    """Send the round's client failures, per-device detail and metrics to the sinks
    and the metrics to the callback."""
    emit_events(outcome.round_idx, outcome.failed, metrics, sinks, on_round, detail=detail)


def emit_events(
    round_idx: int,
    failed: Sequence[tuple[int, str]],
    metrics: RoundMetrics,
    sinks: Sequence[Sink],
    on_round: Callable[[RoundMetrics], None] | None,
    *,
    detail: RoundDetail | None = None,
) -> None:
    """Send ``(client, reason)`` failures, the round's per-device ``detail`` (if any),
    then ``metrics``, to the sinks; then the metrics to the callback (a synchronous
    round, or a FedBuff server step)."""
    for cid, reason in failed:
        failure = ClientFailure(round_idx, cid, reason)
        for sink in sinks:
            sink.emit(failure)
    if detail is not None:
        for sink in sinks:
            sink.emit(detail)
    for sink in sinks:
        sink.emit(metrics)
    if on_round is not None:
        on_round(metrics)


def codec_stats(
    *,
    uploads: int,
    size: int,
    bytes_up: int,
    bytes_down: int,
    receivers: int,
    decode_s: float,
    client_means: Mapping[str, float],
) -> CodecStats:
    """Codec figures of a round: uplink ratio against dense, bytes per client, and the
    clients' mean encoding seconds when they report it (``encode_s``)."""
    done = max(uploads, 1)
    dense = done * dense_bytes(size)
    return CodecStats(
        uplink_ratio=dense / bytes_up if bytes_up else 1.0,
        uplink_bytes_per_client=bytes_up / done,
        downlink_bytes_per_client=bytes_down / max(receivers, 1),
        server_decode_s=decode_s,
        client_encode_s=client_means.get("encode_s"),
    )
