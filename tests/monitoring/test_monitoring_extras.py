"""Issue 14 part 8: the report without matplotlib (the ``plot`` extra)."""

from __future__ import annotations

import logging
import sys

import pytest

from fedstrata.errors import MissingDependencyError
from fedstrata.monitoring import write_report
from fedstrata.monitoring._plots import render_plots


def block(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setitem(sys.modules, name, None)


def test_figures_without_matplotlib_name_the_plot_extra(monkeypatch, make_metrics):
    block(monkeypatch, "matplotlib")
    with pytest.raises(MissingDependencyError, match=r"pip install 'fedstrata\[plot\]'"):
        render_plots([make_metrics(0)])


def test_report_without_matplotlib_keeps_its_tables(
    monkeypatch, tmp_path, make_metrics, write_run, caplog
):
    block(monkeypatch, "matplotlib")
    write_run(tmp_path, [make_metrics(0), make_metrics(1)])
    caplog.set_level(logging.WARNING, logger="fedstrata.monitoring.report")
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<svg" not in page
    assert "No figures: drawing figures needs the package" in page
    assert "pip install &#x27;fedstrata[plot]&#x27;" in page
    assert "<h2>Summary</h2>" in page
    assert "<h2>Client failures</h2>" in page
    assert "report without figures" in caplog.text
