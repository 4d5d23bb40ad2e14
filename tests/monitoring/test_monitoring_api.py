"""The public surface of fedstrata.monitoring."""

from __future__ import annotations

import importlib
import subprocess
import sys

from fedstrata import monitoring

EXPECTED = {
    "CONFIG_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "REPORT_FILE",
    "SUMMARY_FILE",
    "ClientEval",
    "ClientFailure",
    "Fanout",
    "FedEvalMetrics",
    "MemorySink",
    "MetricDistribution",
    "MetricEvent",
    "RoundMetrics",
    "RunFinished",
    "RunStarted",
    "RunStatus",
    "RunStore",
    "RunTotals",
    "Sink",
    "build_summary",
    "new_run_dir",
    "write_report",
    # Issue 12 part 5: the typed per-round records (defined in fedstrata.core.metrics)
    "AsyncStats",
    "CodecStats",
    "PrecisionStats",  # Issue 17: fp16 loss scaling's skipped steps
    "PrivacySpent",
    "ScheduleStats",
    "SecAggStats",
    "SecAggTreeStats",
    "StatsRecord",
    "SystemStats",
    "DeviceRound",
    "DeviceStats",
    "NodeRound",
    "RoundDetail",
    "TierIngress",
    "TierStats",
    # Issue 16 part 4: alert rules
    "Alert",
    "AlertRule",
    "DEFAULT_RULES",
    "evaluate",
}


def test_all_is_the_public_api():
    assert set(monitoring.__all__) == EXPECTED
    for name in monitoring.__all__:
        assert getattr(monitoring, name) is not None


def test_submodules_declare_all():
    for module in ("events", "fedeval", "sinks", "runstore", "rundir", "report", "alerts"):
        mod = importlib.import_module(f"fedstrata.monitoring.{module}")
        assert all(hasattr(mod, name) for name in mod.__all__)


def test_importing_monitoring_does_not_import_matplotlib():
    code = "import sys, fedstrata.monitoring; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
