"""Metric events, sinks, the run store, and the HTML report.

The simulator emits typed events (:class:`RunStarted`, :class:`RoundMetrics`,
:class:`ClientFailure`, :class:`FedEvalMetrics`, :class:`RunFinished`) to a
:class:`Sink` — usually a :class:`Fanout` over a :class:`RunStore` and other
exporters. Reports and dashboards read the run directory back through
:meth:`RunStore.open`.
"""

from fedstrata.monitoring.events import (
    ClientFailure,
    MetricEvent,
    RoundMetrics,
    RunFinished,
    RunStarted,
    RunStatus,
    RunTotals,
)
from fedstrata.monitoring.fedeval import ClientEval, FedEvalMetrics, MetricDistribution
from fedstrata.monitoring.report import write_report
from fedstrata.monitoring.rundir import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    build_summary,
    new_run_dir,
)
from fedstrata.monitoring.runstore import RunStore
from fedstrata.monitoring.sinks import Fanout, MemorySink, Sink

__all__ = [
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
]
