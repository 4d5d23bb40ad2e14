"""The round record every driver writes (``coordinator.round_metrics``)."""

from __future__ import annotations

import pytest

from fedstrata.coordinator import RoundOutcome
from fedstrata.coordinator.cadence import Evaluation
from fedstrata.coordinator.round_logic import dense_bytes
from fedstrata.coordinator.round_metrics import (
    ClientCounts,
    RoundFigures,
    codec_stats,
    emit_events,
    emit_round,
    round_metrics,
)
from fedstrata.core.metrics import TierStats
from fedstrata.errors import DataError
from fedstrata.monitoring import ClientFailure, MemorySink

OUTCOME = RoundOutcome(3, 5, (1, 2), ((9, "gone"),), (4,), 2.0, True)
FIGURES = RoundFigures(0.5, 300, 500, 2.0, 7.0, 0.1, (0.25, 1.0, 0.5))


def test_counts_of_an_outcome() -> None:
    assert ClientCounts.of(OUTCOME) == ClientCounts(5, 2, 1, 1)


def test_round_metrics_places_counts_evaluation_figures_and_records() -> None:
    ev = Evaluation(0.75, 0.4, {"test_mae": 0.2})
    codec = codec_stats(
        uploads=2, size=10, bytes_up=300, bytes_down=500, receivers=5, decode_s=0.0,
        client_means={},
    )  # fmt: skip
    m = round_metrics(3, ClientCounts.of(OUTCOME), ev, FIGURES, codec, None)
    assert (m.round_idx, m.accuracy, m.loss, m.train_loss) == (3, 0.75, 0.4, 0.5)
    assert (m.clients_selected, m.clients_completed, m.clients_failed, m.clients_late) == (
        5, 2, 1, 1,
    )  # fmt: skip
    assert (m.bytes_up, m.bytes_down) == (300, 500)
    assert (m.sim_round_s, m.sim_time_s, m.wall_round_s) == (2.0, 7.0, 0.1)
    assert (m.downlink_s, m.compute_s, m.uplink_s) == (0.25, 1.0, 0.5)
    assert m.extras == {"test_mae": 0.2}
    assert m.codec == codec
    assert m.tiers is None


def test_round_metrics_without_evaluation_or_legs() -> None:
    figures = RoundFigures(None, 0, 0, 1.0, 1.0, 1.0)
    m = round_metrics(0, ClientCounts(2, 0, 2, 0), Evaluation(), figures)
    assert (m.accuracy, m.loss, m.extras) == (None, None, {})
    assert (m.downlink_s, m.compute_s, m.uplink_s) == (0.0, 0.0, 0.0)


def test_round_metrics_refuses_two_records_of_one_family() -> None:
    tiers = TierStats(
        center_ingress_bytes=1, region_ingress_bytes=0, edge_ingress_bytes=0, edge_rounds=1,
        client_updates=1,
    )  # fmt: skip
    with pytest.raises(DataError, match="two TierStats records"):
        round_metrics(3, ClientCounts.of(OUTCOME), Evaluation(), FIGURES, tiers, tiers)


def test_round_metrics_refuses_more_outcomes_than_selected() -> None:
    with pytest.raises(DataError, match="clients_selected"):
        round_metrics(3, ClientCounts(1, 1, 1, 0), Evaluation(), FIGURES)


def test_codec_stats_against_dense() -> None:
    stats = codec_stats(
        uploads=4, size=100, bytes_up=dense_bytes(100), bytes_down=4 * dense_bytes(100),
        receivers=5, decode_s=0.25, client_means={"encode_s": 0.5},
    )  # fmt: skip
    assert stats.uplink_ratio == 4.0
    assert stats.uplink_bytes_per_client == dense_bytes(100) / 4
    assert stats.downlink_bytes_per_client == 4 * dense_bytes(100) / 5
    assert stats.server_decode_s == 0.25
    assert stats.client_encode_s == 0.5
    empty = codec_stats(
        uploads=0, size=10, bytes_up=0, bytes_down=0, receivers=0, decode_s=0.0,
        client_means={},
    )  # fmt: skip
    assert empty.uplink_ratio == 1.0
    assert empty.client_encode_s is None


def test_emit_events_sends_failures_then_metrics_then_the_callback() -> None:
    sink, seen = MemorySink(), []
    metrics = round_metrics(3, ClientCounts(2, 1, 1, 0), Evaluation(), FIGURES)
    emit_events(3, [(9, "gone")], metrics, [sink], seen.append)
    assert sink.events == [ClientFailure(3, 9, "gone"), metrics]
    assert seen == [metrics]


def test_emit_round_sends_the_outcomes_failures() -> None:
    sink = MemorySink()
    metrics = round_metrics(3, ClientCounts.of(OUTCOME), Evaluation(), FIGURES)
    emit_round(OUTCOME, metrics, [sink], None)
    assert sink.events == [ClientFailure(3, 9, "gone"), metrics]
