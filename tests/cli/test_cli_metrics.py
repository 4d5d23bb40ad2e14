"""Issue 12 part 5: the CLI's progress line and summary read the typed record fields."""

from __future__ import annotations

from typer.testing import CliRunner

from fedstrata.cli import app
from fedstrata.cli.commands import _extra_rows, _RoundProgress
from fedstrata.monitoring import (
    AsyncStats,
    CodecStats,
    PrivacySpent,
    RoundMetrics,
    ScheduleStats,
    SecAggStats,
    TierStats,
)


def _round(idx: int, **stats: object) -> RoundMetrics:
    return RoundMetrics(
        round_idx=idx, accuracy=0.5, loss=1.0, train_loss=1.2, clients_selected=4,
        clients_completed=4, clients_failed=0, clients_late=0, bytes_up=100, bytes_down=400,
        sim_round_s=1.0, sim_time_s=idx + 1.0, wall_round_s=0.1, compute_s=0.5,
        downlink_s=0.1, uplink_s=0.1, extras={"test_f1": 0.625}, **stats,  # type: ignore[arg-type]
    )  # fmt: skip


def test_summary_rows_come_from_the_records() -> None:
    last = _round(
        1,
        codec=CodecStats(8.0, 50.0, 400.0),
        privacy=PrivacySpent(1.25, 0.75, 1.1, 0.2, stage=1),
        tiers=TierStats(800, 1600, 3200, 4, 10),
        schedule=ScheduleStats(0.9, 0.5, 1.0, 4.0, 20.0, 4, 0.8, 2, 1, 30.0, 7.5),
        secagg=SecAggStats(0.2, 0.05, 0.01, 0.03, 0, 900.0, 300.0, 1.2),
        fedbuff=AsyncStats(1.5, 3.0, 2, 20.0, 0.5),
    )
    rows = dict(_extra_rows([_round(0, codec=CodecStats(4.0, 100.0, 400.0)), last], "budget"))
    assert rows["uplink compression"] == "6.0x fewer bytes than dense float32"
    assert rows["privacy spent (ε)"] == "1.2500"
    assert rows["final test_f1"] == "0.6250"
    assert rows["tier ingress (last round)"] == "edge 3,200 B, region 1,600 B, center 800 B"
    assert rows["scheduler (last round)"] == "target 30 s, 2 partial, 1 dropped"
    assert rows["secure aggregation"] == "1.20x bandwidth"
    assert rows["staleness (last step)"] == "mean 1.50"
    assert rows["stopped early"] == "budget"


def test_a_round_without_records_shows_none_of_them() -> None:
    rows = dict(_extra_rows([_round(0)], None))
    assert rows == {"final test_f1": "0.6250"}


def test_progress_line_reads_the_codec_and_privacy_fields() -> None:
    progress = _RoundProgress(total=2, enabled=False)
    progress(_round(0, codec=CodecStats(8.0, 50.0, 400.0), privacy=PrivacySpent(0.5, 1.5, 1, 0.2)))
    info = progress.progress.tasks[0].fields["info"]
    assert "up 8x" in info
    assert "ε 0.500" in info


def test_run_prints_the_privacy_spent(tmp_path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "run", "--preset", "quickstart", "--quiet",
            "--set", "rounds.rounds=2", "--set", "data.num_clients=12",
            "--set", "rounds.clients_per_round=6", "--set", "sim.workers=0",
            "--set", "privacy.mechanism=central", "--set", "privacy.epsilon=8",
            "--set", "output.run_store=false", "--set", "output.report=false",
            "--set", f"output.dir={tmp_path}",
        ],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "privacy spent (ε)" in res.output
