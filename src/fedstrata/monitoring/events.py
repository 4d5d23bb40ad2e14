"""Typed metric events and the running totals that summarise a run.

Metrics are not logs: the simulator (and later the runtime) emits these frozen events
to opt-in sinks (:mod:`fedstrata.monitoring.sinks`), such as the run store. One run emits::

    RunStarted  (RoundMetrics | ClientFailure | RoundDetail | FedEvalMetrics | Alert)*  RunFinished

(:class:`~fedstrata.monitoring.fedeval.FedEvalMetrics`: a round's federated evaluation;
:class:`~fedstrata.monitoring.devices.RoundDetail`: a round's per-device and per-tier
figures, sent just before its RoundMetrics; :class:`~fedstrata.monitoring.alerts.Alert`:
an alert rule fired, after the round's metrics.)

:class:`RunStatus`, :class:`RunFinished` and :class:`RunTotals` (the run's summary)
live in :mod:`fedstrata.monitoring.run_events` and are re-exported here.

Events validate at construction and raise :class:`~fedstrata.errors.DataError` naming
the field, the value and the rule. Test loss and training loss may be NaN or infinite
(a diverged run is recorded, not refused); everything else is finite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeAlias

from fedstrata.core.metrics import (
    STATS_RECORDS,
    AnyStats,
    AsyncStats,
    CodecStats,
    PrecisionStats,
    PrivacySpent,
    ResilienceStats,
    ScheduleStats,
    SecAggStats,
    SecAggTreeStats,
    StatsRecord,
    SystemStats,
    TierStats,
)
from fedstrata.monitoring._alert import Alert
from fedstrata.monitoring._checks import (
    check_accuracy,
    check_extras,
    check_int,
    check_loss,
    check_seconds,
    fail,
    set_field,
)
from fedstrata.monitoring.devices import RoundDetail
from fedstrata.monitoring.fedeval import FedEvalMetrics
from fedstrata.monitoring.run_events import RunFinished, RunStatus, RunTotals

__all__ = [
    "AsyncStats",
    "ClientFailure",
    "CodecStats",
    "MetricEvent",
    "PrecisionStats",
    "PrivacySpent",
    "ResilienceStats",
    "RoundMetrics",
    "RunFinished",
    "RunStarted",
    "RunStatus",
    "RunTotals",
    "ScheduleStats",
    "SecAggStats",
    "SecAggTreeStats",
    "StatsRecord",
    "SystemStats",
    "TierStats",
]

_REL_TOL = 1e-6
_ABS_TOL = 1e-9


@dataclass(frozen=True)
class RoundMetrics:
    """What one round did, as the center saw it.

    The client outcomes ``clients_completed``, ``clients_failed`` and ``clients_late``
    are disjoint, so they sum to at most ``clients_selected``. The breakdown
    ``downlink_s + compute_s + uplink_s`` is the critical path's share of the round and
    sums to at most ``sim_round_s`` (the rest, if any, is server time).

    Attributes:
        round_idx: the round, from 0.
        accuracy: centralized test accuracy in [0, 1], or None when not evaluated.
        loss: centralized test loss (may be NaN/inf if the run diverged), or None.
        train_loss: mean client training loss, or None.
        clients_selected: clients asked to train this round.
        clients_completed: clients whose update was aggregated.
        clients_failed: clients that dropped out or sent an invalid update.
        clients_late: clients that missed the deadline.
        bytes_up: bytes sent by clients (all hops, as encoded).
        bytes_down: bytes sent to clients.
        sim_round_s: simulated duration of the round.
        sim_time_s: cumulative simulated time at the round's end.
        wall_round_s: wall time the simulation of this round took.
        compute_s: critical path's local-training time.
        downlink_s: critical path's model-download time.
        uplink_s: critical path's update-upload time.
        extras: the task's own named metrics (``test_<name>``: free-form by design).
        codec: what the update codecs did (uplink ratio, bytes per client), or None.
        privacy: the DP budget spent after the round, or None without central DP.
        schedule: the work-allocating scheduler's figures, or None.
        tiers: per-tier ingress of a tree round, or None for a flat round.
        fedbuff: a FedBuff server step's staleness and work in flight, or None.
        secagg: the secure-aggregation protocol's costs, or None.
        secagg_tree: two-tier secure aggregation's costs in a tree, or None.
        precision: fp16 loss scaling's skipped steps, or None (fp32, bf16).
        system: what the devices and links did (busy time, FLOPs, link capacity,
            contention, failure and recovery times), or None (a store written before).
        resilience: checkpoint save times, center failovers and recovery, or None
            (no checkpoints).

    The typed fields are :mod:`fedstrata.core.metrics` records; :meth:`stats` lists
    the present ones and :meth:`with_stats` places records into their fields.
    """

    round_idx: int
    accuracy: float | None
    loss: float | None
    train_loss: float | None
    clients_selected: int
    clients_completed: int
    clients_failed: int
    clients_late: int
    bytes_up: int
    bytes_down: int
    sim_round_s: float
    sim_time_s: float
    wall_round_s: float
    compute_s: float
    downlink_s: float
    uplink_s: float
    extras: Mapping[str, float] = field(default_factory=dict)
    codec: CodecStats | None = None
    privacy: PrivacySpent | None = None
    schedule: ScheduleStats | None = None
    tiers: TierStats | None = None
    fedbuff: AsyncStats | None = None
    secagg: SecAggStats | None = None
    secagg_tree: SecAggTreeStats | None = None
    precision: PrecisionStats | None = None
    system: SystemStats | None = None
    resilience: ResilienceStats | None = None

    def __post_init__(self) -> None:
        """Validate and normalise every field (ints stay ints, floats become floats).

        Raises:
            DataError: a field breaks its rule; the message names field, value and rule.
        """
        ev = f"RoundMetrics(round {self.round_idx!r})"
        for name in ("round_idx", "clients_selected", "clients_completed", "clients_failed"):
            check_int(ev, name, getattr(self, name))
        for name in ("clients_late", "bytes_up", "bytes_down"):
            check_int(ev, name, getattr(self, name))
        set_field(self, "accuracy", check_accuracy(ev, "accuracy", self.accuracy))
        set_field(self, "loss", check_loss(ev, "loss", self.loss))
        set_field(self, "train_loss", check_loss(ev, "train_loss", self.train_loss))
        for name in ("sim_round_s", "sim_time_s", "wall_round_s"):
            set_field(self, name, check_seconds(ev, name, getattr(self, name)))
        for name in ("compute_s", "downlink_s", "uplink_s"):
            set_field(self, name, check_seconds(ev, name, getattr(self, name)))
        set_field(self, "extras", check_extras(ev, self.extras))
        for cls in STATS_RECORDS:
            value = getattr(self, cls.FAMILY)
            if value is not None and type(value) is not cls:
                raise fail(ev, cls.FAMILY, value, f"must be None or a {cls.__name__}")
        self._check_consistency(ev)

    def stats(self) -> tuple[StatsRecord, ...]:
        """The typed records present, in :data:`~fedstrata.core.metrics.STATS_RECORDS` order."""
        found = (getattr(self, cls.FAMILY) for cls in STATS_RECORDS)
        return tuple(r for r in found if r is not None)

    def with_stats(self, *records: AnyStats | None) -> RoundMetrics:
        """A copy with each record in its family's field (``None`` entries skipped).

        Raises:
            DataError: two records of one family.
        """
        placed: dict[str, StatsRecord] = {}
        for record in records:
            if record is None:
                continue
            if record.FAMILY in placed or getattr(self, record.FAMILY) is not None:
                msg = f"two {type(record).__name__} records for one round"
                raise fail(f"RoundMetrics(round {self.round_idx})", record.FAMILY, record, msg)
            placed[record.FAMILY] = record
        return replace(self, **placed)  # type: ignore[arg-type]

    def _check_consistency(self, ev: str) -> None:
        outcomes = self.clients_completed + self.clients_failed + self.clients_late
        if outcomes > self.clients_selected:
            rule = f"completed+failed+late must be <= clients_selected={self.clients_selected}"
            raise fail(ev, "completed+failed+late", outcomes, rule)
        slack = self.sim_round_s * _REL_TOL + _ABS_TOL
        breakdown = self.downlink_s + self.compute_s + self.uplink_s
        if breakdown > self.sim_round_s + slack:
            rule = f"downlink+compute+uplink must be <= sim_round_s={self.sim_round_s}"
            raise fail(ev, "downlink+compute+uplink", breakdown, rule)
        if self.sim_time_s + slack < self.sim_round_s:
            rule = f"cumulative time must be >= sim_round_s={self.sim_round_s}"
            raise fail(ev, "sim_time_s", self.sim_time_s, rule)


@dataclass(frozen=True)
class ClientFailure:
    """A client that failed in a round (dropout, crash, invalid update, deadline).

    Attributes:
        round_idx: the round.
        client_id: the client.
        reason: a short human-readable cause.
    """

    round_idx: int
    client_id: int
    reason: str

    def __post_init__(self) -> None:
        """Validate the fields.

        Raises:
            DataError: negative ids or a non-str reason.
        """
        ev = f"ClientFailure(round {self.round_idx!r}, client {self.client_id!r})"
        check_int(ev, "round_idx", self.round_idx)
        check_int(ev, "client_id", self.client_id)
        if not isinstance(self.reason, str):
            raise fail(ev, "reason", self.reason, "must be a str")


@dataclass(frozen=True)
class RunStarted:
    """A run began.

    Attributes:
        run_id: the run's name (usually its directory's name).
        config_yaml: the resolved configuration, as YAML text; stored verbatim.
        num_clients: clients in the federation.
        num_params: scalars in the model's flat vector.
    """

    run_id: str
    config_yaml: str
    num_clients: int
    num_params: int

    def __post_init__(self) -> None:
        """Validate the fields.

        Raises:
            DataError: empty run id, non-str config, or counts out of range.
        """
        ev = f"RunStarted({self.run_id!r})"
        if not isinstance(self.run_id, str) or not self.run_id:
            raise fail(ev, "run_id", self.run_id, "must be a non-empty str")
        if not isinstance(self.config_yaml, str):
            raise fail(ev, "config_yaml", type(self.config_yaml).__name__, "must be a str")
        check_int(ev, "num_clients", self.num_clients, low=1)
        check_int(ev, "num_params", self.num_params)


MetricEvent: TypeAlias = (
    RoundMetrics | ClientFailure | RunStarted | RunFinished | FedEvalMetrics | RoundDetail | Alert
)
