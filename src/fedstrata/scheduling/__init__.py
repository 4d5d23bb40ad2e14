"""Heterogeneity-aware scheduling: device registry, predictor, allocation, selection.

* :class:`Registry` — device profiles, model partitions and round history in SQL
  (SQLite by default, PostgreSQL by URL), migrated with Alembic on open.
* :func:`measure_device` / :func:`relative_speed` / :func:`register_measurement` —
  benchmark a device (and its bf16 / fp16 speed factors).
* :class:`TimePredictor` — per-device training time, learned online from history.
* :func:`allocate_work` / :func:`plan_round` / :func:`settle_at_deadline` — size each
  client's work so all finish by the deadline; accept partial work at the deadline.
* :class:`RandomSelector`, :class:`OortSelector` — cohort selection.
* :class:`FedBuffServer`, :class:`FedBuffConfig` — buffered asynchronous aggregation
  (sans-IO): the buffer and the staleness rules (the round engine dispatches, see
  :mod:`fedstrata.coordinator.buffered`).
* :func:`round_utilization` — a round's utilization (``RoundMetrics.schedule``).
"""

from typing import TYPE_CHECKING, Any

from fedstrata.scheduling.allocation import (
    Allocation,
    WorkBounds,
    allocate_work,
    choose_partitions,
    first_arrivals,
    link_seconds,
    overselect,
    plan_round,
    settle_at_deadline,
    settle_reported,
    settlement_weights,
)
from fedstrata.scheduling.benchmark import (
    DeviceMeasurement,
    measure_device,
    measure_rtt,
    register_measurement,
    relative_speed,
)
from fedstrata.scheduling.fedbuff import (
    Accepted,
    Applied,
    FedBuffConfig,
    FedBuffServer,
    FedBuffState,
    Rejected,
    StalenessKind,
    staleness_weight,
)
from fedstrata.scheduling.metrics import (
    RoundUtilization,
    device_utilization,
    round_utilization,
)
from fedstrata.scheduling.predictor import (
    PredictorConfig,
    PredictorError,
    PredictorState,
    TimePredictor,
    replay_history,
)
from fedstrata.scheduling.records import (
    AllocationCandidates,
    DeviceProfiles,
    HistoryBatch,
    ModelPartition,
    WorkStatus,
)
from fedstrata.scheduling.selection import (
    OortConfig,
    OortSelector,
    OortState,
    RandomSelector,
    Selector,
)

__all__ = [
    "Accepted",
    "Allocation",
    "AllocationCandidates",
    "Applied",
    "DeviceMeasurement",
    "DeviceProfiles",
    "FedBuffConfig",
    "FedBuffServer",
    "FedBuffState",
    "HistoryBatch",
    "ModelPartition",
    "OortConfig",
    "OortSelector",
    "OortState",
    "PredictorConfig",
    "PredictorError",
    "PredictorState",
    "RandomSelector",
    "Registry",
    "Rejected",
    "RoundUtilization",
    "Selector",
    "StalenessKind",
    "TimePredictor",
    "WorkBounds",
    "WorkStatus",
    "allocate_work",
    "choose_partitions",
    "device_utilization",
    "first_arrivals",
    "link_seconds",
    "measure_device",
    "measure_rtt",
    "migrate",
    "overselect",
    "plan_round",
    "register_measurement",
    "registry_url",
    "relative_speed",
    "replay_history",
    "round_utilization",
    "settle_at_deadline",
    "settle_reported",
    "settlement_weights",
    "staleness_weight",
]

if TYPE_CHECKING:
    from fedstrata.scheduling._migrate import migrate
    from fedstrata.scheduling.registry import Registry, registry_url

# The registry's names load SQLAlchemy and Alembic (about 0.3 s): on first use, so a
# run that schedules nothing (and every process that only plans or selects) skips them.
_LAZY = {
    "Registry": "fedstrata.scheduling.registry",
    "registry_url": "fedstrata.scheduling.registry",
    "migrate": "fedstrata.scheduling._migrate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fedstrata.scheduling' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
