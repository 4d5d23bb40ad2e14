"""Metric events, sinks, the run store, and the HTML report.

The simulator emits typed events (:class:`RunStarted`, :class:`RoundMetrics`,
:class:`ClientFailure`, :class:`FedEvalMetrics`, :class:`Alert`, :class:`RunFinished`) to a
:class:`Sink` — usually a :class:`Fanout` over a :class:`RunStore` and other
exporters. Reports and dashboards read the run directory back through
:meth:`RunStore.open`. A round's features report typed records in its fields
(:class:`CodecStats`, :class:`PrivacySpent`, :class:`ScheduleStats`,
:class:`TierStats`, :class:`AsyncStats`, :class:`SecAggStats`,
:class:`SecAggTreeStats`, :class:`PrecisionStats`, :class:`SystemStats`; defined in
:mod:`fedstrata.core.metrics`). :mod:`fedstrata.monitoring.catalogue` computes the
twelve federation metrics from them.
"""

from fedstrata.monitoring.alerts import DEFAULT_RULES, Alert, AlertRule, evaluate
from fedstrata.monitoring.devices import (
    DeviceRound,
    DeviceStats,
    NodeRound,
    RoundDetail,
    TierIngress,
)
from fedstrata.monitoring.events import (
    AsyncStats,
    ClientFailure,
    CodecStats,
    MetricEvent,
    PrecisionStats,
    PrivacySpent,
    RoundMetrics,
    RunFinished,
    RunStarted,
    RunStatus,
    RunTotals,
    ScheduleStats,
    SecAggStats,
    SecAggTreeStats,
    StatsRecord,
    SystemStats,
    TierStats,
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
    "DEFAULT_RULES",
    "METRICS_FILE",
    "MODEL_FILE",
    "REPORT_FILE",
    "SUMMARY_FILE",
    "Alert",
    "AlertRule",
    "AsyncStats",
    "ClientEval",
    "ClientFailure",
    "CodecStats",
    "DeviceRound",
    "DeviceStats",
    "Fanout",
    "FedEvalMetrics",
    "MemorySink",
    "MetricDistribution",
    "MetricEvent",
    "NodeRound",
    "PrecisionStats",
    "PrivacySpent",
    "RoundDetail",
    "RoundMetrics",
    "RunFinished",
    "RunStarted",
    "RunStatus",
    "RunStore",
    "RunTotals",
    "ScheduleStats",
    "SecAggStats",
    "SecAggTreeStats",
    "Sink",
    "StatsRecord",
    "SystemStats",
    "TierIngress",
    "TierStats",
    "build_summary",
    "evaluate",
    "new_run_dir",
    "write_report",
]
