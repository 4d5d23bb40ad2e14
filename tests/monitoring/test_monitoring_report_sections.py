"""Issue 16 part 6: the report's feature sections, built from hand-made figures."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from fedstrata.core.metrics import AsyncStats, CodecStats, PrivacySpent, ScheduleStats
from fedstrata.monitoring import RoundMetrics, write_report
from fedstrata.monitoring._report_devices import (
    jain_index,
    participation_section,
    scheduling_section,
    tiers_section,
)
from fedstrata.monitoring._report_sections import compression_section, privacy_section
from fedstrata.monitoring.catalogue import federation_metrics
from fedstrata.monitoring.devices import (
    DeviceRound,
    DeviceStats,
    NodeRound,
    RoundDetail,
    TierIngress,
)

MakeMetrics = Callable[..., RoundMetrics]


def _dp(r: int, sigma: float) -> PrivacySpent:
    return PrivacySpent(0.5 * (r + 1), 10.0 - 0.5 * (r + 1), sigma, 0.1)


def test_privacy_warns_when_accuracy_falls_while_noise_dominates(make_metrics: MakeMetrics):
    accs = [0.5, 0.6, 0.55, 0.5, 0.45, 0.4]
    rounds = [make_metrics(r, accuracy=a).with_stats(_dp(r, 1.5)) for r, a in enumerate(accs)]
    sec = privacy_section(rounds, federation_metrics(rounds), {"rounds": {"rounds": 10}})
    assert sec is not None
    text = "\n".join(sec.parts)
    # the plan splits ε = 0.5 * 6 + (10 - 3) = 10 evenly over the 10 planned rounds
    (plan,) = [p for p in sec.panels if p.title == "ε spent vs plan"]
    assert list(plan.series["even split of ε=10 over 10 rounds"]) == pytest.approx(
        [1.0 * (r + 1) for r in range(6)]
    )
    assert "Accuracy fell" in text
    # rounds 0-3: (0.5 - 0.5) / 3 = 0; round 4: (0.45 - 0.5) / 4 < 0; round 5: (0.4 - 0.6) / 4
    assert "at rounds 4, 5 while" in text
    assert "ahead of the even plan" not in text  # 0.5 per round < 1.0 planned


def test_privacy_is_quiet_while_accuracy_rises_or_noise_is_small(make_metrics: MakeMetrics):
    rising = [make_metrics(r).with_stats(_dp(r, 1.5)) for r in range(6)]
    falling = [make_metrics(r, accuracy=0.9 - 0.1 * r).with_stats(_dp(r, 0.5)) for r in range(6)]
    for rounds in (rising, falling):
        sec = privacy_section(rounds, federation_metrics(rounds), {})
        assert sec is not None
        assert "Accuracy fell" not in "\n".join(sec.parts)
    assert privacy_section([make_metrics(0)], federation_metrics([make_metrics(0)]), {}) is None


def _codec(up: float, down_per_client: float) -> CodecStats:
    return CodecStats(up, 100.0, down_per_client)


def test_compression_reports_both_directions_and_the_version_lag(make_metrics: MakeMetrics):
    dense = 16 + 4 * 1000  # HEADER_SIZE + 4 bytes per parameter
    rounds = [
        make_metrics(r).with_stats(
            _codec(8.0 + r, dense / 4.0), AsyncStats(1.0 + r, 3.0 + r, 4, 10.0, 1.0)
        )
        for r in range(4)
    ]
    sec = compression_section(rounds, 1000)
    assert sec is not None
    titles = [p.title for p in sec.panels]
    assert titles == ["uplink ratio vs round", "version lag (mean) vs round"]  # down: constant
    text = "\n".join(sec.parts)
    assert '<td class="num">9.5</td>' in text  # mean uplink ratio of 8, 9, 10, 11
    assert '<td class="num">4</td>' in text  # downlink: dense / (dense / 4)
    dense_rounds = [make_metrics(r).with_stats(_codec(1.0, dense)) for r in range(3)]
    assert compression_section(dense_rounds, 1000) is None


def test_scheduling_section_tabulates_and_plots_what_varies(make_metrics: MakeMetrics):
    def sched(r: int) -> ScheduleStats:
        return ScheduleStats(0.5 + 0.1 * r, 0.2, 1.0, 4.0, 9.0, 8, 0.5, r, 0, 10.0, 3.0,
                             predictor_mape_last=0.3, predictor_mape_cumulative=0.3)  # fmt: skip

    rounds = [make_metrics(r).with_stats(sched(r)) for r in range(3)]
    sec = scheduling_section(rounds)
    assert sec is not None
    assert [p.title for p in sec.panels] == [
        "device utilization vs round", "clients with partial / dropped work vs round"
    ]  # fmt: skip
    assert scheduling_section([make_metrics(0)]) is None


def _device(cid: int, selected: int, compute_s: float) -> DeviceStats:
    return DeviceStats(cid, selected, selected, 0.5, 0, compute_s, 1.0)


def test_participation_flags_a_selector_that_starves_slow_clients():
    fast = [_device(c, 10, 1.0) for c in range(6)]
    slow = [_device(6 + c, 2, 9.0) for c in range(6)]
    sec = participation_section(fast + slow)
    assert sec is not None
    text = "\n".join(sec.parts)
    assert "starving slow clients" in text
    jain = (6 * 10 + 6 * 2) ** 2 / (12 * (6 * 100 + 6 * 4))
    assert jain_index([10] * 6 + [2] * 6) == pytest.approx(jain)
    assert f"{jain:.3f}" in text
    fair = participation_section([_device(c, 5, 1.0 + c) for c in range(12)])
    assert fair is not None
    assert "starving" not in "\n".join(fair.parts)
    assert '<td class="num">1.000</td>' in "\n".join(fair.parts)
    assert participation_section([]) is None


def test_tiers_section_sums_each_tier_per_round():
    rows = [
        TierIngress("e0", "edge", 0, 100, 2, 1.0), TierIngress("e1", "edge", 0, 50, 1, 2.0),
        TierIngress("center", "center", 0, 40, 3, 3.0),
        TierIngress("e0", "edge", 1, 300, 2, 1.0), TierIngress("center", "center", 1, 40, 2, 5.0),
    ]  # fmt: skip
    sec = tiers_section(rows)
    assert sec is not None
    (panel,) = sec.panels
    assert list(panel.series["edge"]) == [150, 300]
    assert list(panel.series["center"]) == [40, 40]
    assert '<td class="num">400</td>' in sec.parts[0]  # e0 over the run
    assert tiers_section([]) is None


def test_report_of_a_run_with_device_detail(tmp_path, make_metrics: MakeMetrics, write_run):
    """The run store's per-device rows reach the report's Participation section."""
    from fedstrata.monitoring import RunStarted, RunStore

    with RunStore.create(tmp_path) as store:
        store.emit(RunStarted("dev", "rounds: {rounds: 2}\n", 4, 2))
        for r in range(2):
            rows = [
                DeviceRound(c, "accepted", 0.1, 1.0 + c, 0.2, c == 3, (1.0 + c) / 10.0)
                for c in range(4)
            ]
            store.emit(RoundDetail(r, tuple(rows), (NodeRound("center", "center", 9, 4, 1.0),)))
            store.emit(make_metrics(r))
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<h2>Participation</h2>" in page
    assert "<h2>Tiers</h2>" in page
    assert "device utilization per client" in page
    assert '<td>straggler rounds (all clients)</td><td class="num">2</td>' in page
    sections = re.findall(r"<h2>([^<]*)</h2>", page)
    assert sections.index("Reliability") < sections.index("Participation")
