"""The report written in a process of its own (what ``fedstrata run`` starts)."""

from __future__ import annotations

from fedstrata.monitoring import REPORT_FILE
from fedstrata.monitoring.report_job import REPORT_LOG, spawn_report


def test_the_background_report_is_the_foreground_one(tmp_path, make_metrics, write_run):
    write_run(tmp_path, [make_metrics(r) for r in range(3)])
    job = spawn_report(tmp_path)
    assert job.wait(timeout=120) == 0, (tmp_path / REPORT_LOG).read_text()
    page = (tmp_path / REPORT_FILE).read_text(encoding="utf-8")
    assert "<h2>Reliability</h2>" in page


def test_a_failed_background_report_leaves_its_reason_in_the_log(tmp_path):
    (tmp_path / "metrics.sqlite").write_bytes(b"not a database")
    job = spawn_report(tmp_path)
    assert job.wait(timeout=120) == 2
    assert "report of" in (tmp_path / REPORT_LOG).read_text()
    assert not (tmp_path / REPORT_FILE).exists()
