"""The HTML report: self-contained, escaped, and robust to thin or partial runs."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from fedstrata.errors import DataError
from fedstrata.monitoring import (
    REPORT_FILE,
    SUMMARY_FILE,
    ClientFailure,
    RunStarted,
    RunStore,
    write_report,
)
from fedstrata.monitoring.report import MAX_FAILURE_ROWS

EVIL = '</pre><script>alert("x")</script><img src=x onerror=alert(1)>'


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


def _assert_self_contained(page: str) -> None:
    """No scripts, no external assets, no event handlers: only inline HTML and SVG."""
    assert page.startswith("<!DOCTYPE html>")
    parser = _Tags()
    parser.feed(page)
    names = {tag for tag, _ in parser.tags}
    assert not names & {"script", "img", "link", "iframe", "object", "embed", "image"}
    for tag, attrs in parser.tags:
        for key, value in attrs:
            assert not key.startswith("on"), (tag, key)
            assert key != "src", tag
            if key.endswith("href"):
                assert (value or "").startswith("#"), (tag, key, value)
    assert "Content-Security-Policy" in page


def test_report_has_every_plot(tmp_path, make_metrics, write_run):
    rounds = [
        make_metrics(r, extras={"test_f1": 0.5 * r, "compression_ratio": 32.0}) for r in range(20)
    ]
    write_run(tmp_path, rounds, failures=[ClientFailure(3, 9, "dropout")])
    path = write_report(tmp_path)
    assert path == tmp_path / REPORT_FILE
    page = path.read_text(encoding="utf-8")
    _assert_self_contained(page)
    # accuracy x2, loss, bytes, time breakdown, the windowed accuracy metrics (accuracy
    # stops rising at 1.0), the varying task metric; no figure for a constant series
    # (the task's compression_ratio, the other catalogue metrics of these rounds)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", page)
    assert captions == [
        "Bytes per round", "Round time breakdown (critical path)", "Test accuracy vs round",
        "Test accuracy vs simulated time", "Loss vs round", "Convergence speed vs round",
        "Accuracy fluctuation vs round", "test_f1 vs round",
    ]  # fmt: skip
    assert "<td>compression_ratio</td>" in page  # the constant task metric, tabulated
    for group in ("Communication", "Compute", "Model quality", "Reliability"):
        assert f"<h2>{group}</h2>" in page
    assert "<td>dropout</td>" in page
    assert "completed" in page  # status from summary.json


def test_report_escapes_text_from_the_run(tmp_path, make_metrics, write_run):
    rounds = [make_metrics(r, extras={EVIL: 1.0, "cost $ (usd)": 2.0}) for r in range(3)]
    write_run(
        tmp_path,
        rounds,
        config_yaml=f"name: {EVIL}\n",
        run_id=EVIL,
        failures=[ClientFailure(0, 1, EVIL)],
    )
    page = write_report(tmp_path).read_text(encoding="utf-8")
    _assert_self_contained(page)
    assert "&lt;script&gt;" in page
    assert page.count("<svg") == 5  # the task's metrics are constant: tabulated


def test_report_without_any_accuracy(tmp_path, make_metrics, write_run):
    write_run(tmp_path, [make_metrics(r, accuracy=None) for r in range(4)])
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "No test accuracy was measured" in page
    assert "Test accuracy vs round" not in page
    assert page.count("<svg") == 4  # loss, bytes, breakdown, test_f1


def test_report_with_sparse_accuracy_and_diverged_loss(tmp_path, make_metrics, write_run):
    rounds = [
        make_metrics(r, accuracy=0.5 if r % 5 == 0 else None, loss=float("inf") if r == 7 else 1.0)
        for r in range(12)
    ]
    write_run(tmp_path, rounds)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "Test accuracy vs round" in page
    assert page.count("<svg") == 6


def test_report_for_a_single_round(tmp_path, make_metrics, write_run):
    write_run(tmp_path, [make_metrics(0, extras={})])
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert page.count("<svg") == 5


def test_report_for_a_run_without_rounds(tmp_path, write_run):
    write_run(tmp_path, [])
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "No rounds were recorded" in page
    assert "<svg" not in page


def test_report_truncates_the_failure_table(tmp_path, make_metrics, write_run):
    failures = [ClientFailure(0, c, "dropout") for c in range(MAX_FAILURE_ROWS + 70)]
    write_run(tmp_path, [make_metrics(0)], failures=failures)
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert page.count("<td>dropout</td>") == MAX_FAILURE_ROWS
    assert f"first {MAX_FAILURE_ROWS} of {MAX_FAILURE_ROWS + 70}" in page


def test_report_of_a_run_still_being_written(tmp_path, make_metrics):
    with RunStore.create(tmp_path) as store:
        store.emit(RunStarted("live", "a: 1\n", 4, 2))
        store.emit(make_metrics(0))
        out = write_report(tmp_path, out=tmp_path / "live.html")
        page = out.read_text(encoding="utf-8")
        assert not (tmp_path / SUMMARY_FILE).exists()
    assert f"no {SUMMARY_FILE}" in page
    assert page.count("<svg") == 5  # one round: no metric varies


def test_report_rejects_a_corrupt_summary(tmp_path, make_metrics, write_run):
    write_run(tmp_path, [make_metrics(0)])
    (tmp_path / SUMMARY_FILE).write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match=SUMMARY_FILE):
        write_report(tmp_path)
    assert not (tmp_path / REPORT_FILE).exists()


def test_report_leaves_matplotlib_settings_alone(tmp_path, make_metrics, write_run):
    import matplotlib

    write_run(tmp_path, [make_metrics(r) for r in range(2)])
    before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    write_report(tmp_path)
    assert dict(matplotlib.rcParams) == before
    assert matplotlib.get_backend() == backend


def test_report_figure_ids_are_unique(tmp_path, make_metrics, write_run):
    write_run(tmp_path, [make_metrics(r) for r in range(3)])
    page = write_report(tmp_path).read_text(encoding="utf-8")
    # clip paths are referenced by id across the whole page, so one svg must not
    # pick up another's definition.
    ids = re.findall(r'<clipPath id="([^"]+)"', page)
    assert ids
    assert len(ids) == len(set(ids))


def test_report_plots_and_tabulates_the_typed_records(tmp_path, make_metrics, write_run):
    """Issue 16 part 6: central DP gets a Privacy section (ε against the plan, σ), and
    the summary's final_stats appear as family.field rows."""
    from fedstrata.monitoring import PrivacySpent, RunStore

    rounds = [
        make_metrics(r, extras={}).with_stats(PrivacySpent(0.1 * (r + 1), 2.0, 1.1, 0.2))
        for r in range(3)
    ]
    write_run(tmp_path, rounds)
    with RunStore.open(tmp_path) as reader:
        assert [m.privacy for m in reader.rounds()] == [m.privacy for m in rounds]
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<h2>Privacy</h2>" in page
    assert "<figcaption>ε spent vs plan</figcaption>" in page
    assert "noise multiplier \N{GREEK SMALL LETTER SIGMA} vs round" not in page  # constant
    assert "<td>budget ε</td>" in page
    assert "<h2>Features</h2>" not in page
    assert "final_stats: privacy.epsilon_spent" in page
