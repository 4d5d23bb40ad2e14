"""Typed metric events and the running totals that summarise a run.

Metrics are not logs: the simulator (and later the runtime) emits these frozen events
to opt-in sinks (:mod:`fedstrata.monitoring.sinks`), such as the run store. One run emits::

    RunStarted  (RoundMetrics | ClientFailure | FedEvalMetrics)*  RunFinished

(:class:`~fedstrata.monitoring.fedeval.FedEvalMetrics`: a round's federated evaluation.)

Events validate at construction and raise :class:`~fedstrata.errors.DataError` naming
the field, the value and the rule. Test loss and training loss may be NaN or infinite
(a diverged run is recorded, not refused); everything else is finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TypeAlias

from fedstrata.core.metrics import (
    STATS_RECORDS,
    AnyStats,
    AsyncStats,
    CodecStats,
    PrivacySpent,
    ScheduleStats,
    SecAggStats,
    SecAggTreeStats,
    StatsRecord,
    TierStats,
)
from fedstrata.errors import DataError
from fedstrata.monitoring.fedeval import FedEvalMetrics

__all__ = [
    "AsyncStats",
    "ClientFailure",
    "CodecStats",
    "MetricEvent",
    "PrivacySpent",
    "RoundMetrics",
    "RunFinished",
    "RunStarted",
    "RunStatus",
    "RunTotals",
    "ScheduleStats",
    "SecAggStats",
    "SecAggTreeStats",
    "StatsRecord",
    "TierStats",
]

INT64_MAX = 2**63 - 1
_REL_TOL = 1e-6
_ABS_TOL = 1e-9


def _fail(event: str, name: str, value: object, rule: str) -> DataError:
    return DataError(f"{event}: {name}={value!r} is invalid: {rule}")


def _check_int(
    event: str, name: str, value: object, low: int = 0, high: int | None = INT64_MAX
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(event, name, value, "must be an int")
    if value < low or (high is not None and value > high):
        rule = f"must be >= {low}" if high is None else f"must be in [{low}, 2**63)"
        raise _fail(event, name, value, rule)
    return value


def _check_float(event: str, name: str, value: object, *, finite: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(event, name, value, "must be a float")
    as_float = float(value)
    if finite and not math.isfinite(as_float):
        raise _fail(event, name, value, "must be finite")
    return as_float


def _check_seconds(event: str, name: str, value: object) -> float:
    seconds = _check_float(event, name, value)
    if seconds < 0:
        raise _fail(event, name, value, "must be >= 0")
    return seconds


def _check_accuracy(event: str, name: str, value: object) -> float | None:
    if value is None:
        return None
    accuracy = _check_float(event, name, value)
    if not 0.0 <= accuracy <= 1.0:
        raise _fail(event, name, value, "must be None or in [0, 1]")
    return accuracy


def _check_loss(event: str, name: str, value: object) -> float | None:
    return None if value is None else _check_float(event, name, value, finite=False)


def _check_extras(event: str, extras: object) -> Mapping[str, float]:
    if not isinstance(extras, Mapping):
        raise _fail(event, "extras", extras, "must be a mapping of str to float")
    checked: dict[str, float] = {}
    for key, value in extras.items():
        if not isinstance(key, str) or not key:
            raise _fail(event, "extras key", key, "must be a non-empty str")
        checked[key] = _check_float(event, f"extras[{key!r}]", value, finite=False)
    return MappingProxyType(checked)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


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

    def __post_init__(self) -> None:
        """Validate and normalise every field (ints stay ints, floats become floats).

        Raises:
            DataError: a field breaks its rule; the message names field, value and rule.
        """
        ev = f"RoundMetrics(round {self.round_idx!r})"
        for name in ("round_idx", "clients_selected", "clients_completed", "clients_failed"):
            _check_int(ev, name, getattr(self, name))
        for name in ("clients_late", "bytes_up", "bytes_down"):
            _check_int(ev, name, getattr(self, name))
        _set(self, "accuracy", _check_accuracy(ev, "accuracy", self.accuracy))
        _set(self, "loss", _check_loss(ev, "loss", self.loss))
        _set(self, "train_loss", _check_loss(ev, "train_loss", self.train_loss))
        for name in ("sim_round_s", "sim_time_s", "wall_round_s"):
            _set(self, name, _check_seconds(ev, name, getattr(self, name)))
        for name in ("compute_s", "downlink_s", "uplink_s"):
            _set(self, name, _check_seconds(ev, name, getattr(self, name)))
        _set(self, "extras", _check_extras(ev, self.extras))
        for cls in STATS_RECORDS:
            value = getattr(self, cls.FAMILY)
            if value is not None and type(value) is not cls:
                raise _fail(ev, cls.FAMILY, value, f"must be None or a {cls.__name__}")
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
            if record.FAMILY in placed:
                msg = f"two {type(record).__name__} records for one round"
                raise _fail(f"RoundMetrics(round {self.round_idx})", record.FAMILY, record, msg)
            placed[record.FAMILY] = record
        return replace(self, **placed)  # type: ignore[arg-type]

    def _check_consistency(self, ev: str) -> None:
        outcomes = self.clients_completed + self.clients_failed + self.clients_late
        if outcomes > self.clients_selected:
            rule = f"completed+failed+late must be <= clients_selected={self.clients_selected}"
            raise _fail(ev, "completed+failed+late", outcomes, rule)
        slack = self.sim_round_s * _REL_TOL + _ABS_TOL
        breakdown = self.downlink_s + self.compute_s + self.uplink_s
        if breakdown > self.sim_round_s + slack:
            rule = f"downlink+compute+uplink must be <= sim_round_s={self.sim_round_s}"
            raise _fail(ev, "downlink+compute+uplink", breakdown, rule)
        if self.sim_time_s + slack < self.sim_round_s:
            rule = f"cumulative time must be >= sim_round_s={self.sim_round_s}"
            raise _fail(ev, "sim_time_s", self.sim_time_s, rule)


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
        _check_int(ev, "round_idx", self.round_idx)
        _check_int(ev, "client_id", self.client_id)
        if not isinstance(self.reason, str):
            raise _fail(ev, "reason", self.reason, "must be a str")


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
            raise _fail(ev, "run_id", self.run_id, "must be a non-empty str")
        if not isinstance(self.config_yaml, str):
            raise _fail(ev, "config_yaml", type(self.config_yaml).__name__, "must be a str")
        _check_int(ev, "num_clients", self.num_clients, low=1)
        _check_int(ev, "num_params", self.num_params)


class RunStatus(StrEnum):
    """How a run ended."""

    COMPLETED = "completed"
    """All configured rounds ran."""
    STOPPED = "stopped"
    """A rule ended it early (privacy budget spent, target accuracy reached)."""
    FAILED = "failed"
    """An error ended it."""
    INTERRUPTED = "interrupted"
    """It was cancelled, or its store closed without a RunFinished event."""


@dataclass(frozen=True)
class RunFinished:
    """A run ended; the figures a summary reports.

    Attributes:
        run_id: the run's name.
        status: how it ended.
        rounds_completed: rounds whose metrics were emitted.
        final_accuracy: the last accuracy measured, or None if never evaluated.
        best_accuracy: the best accuracy measured, or None.
        final_loss: the last test loss measured, or None.
        sim_time_s: simulated time of the whole run.
        wall_time_s: wall time the run took.
        bytes_up: total bytes sent by clients.
        bytes_down: total bytes sent to clients.
        stop_reason: why it stopped, when ``status`` is not COMPLETED.
    """

    run_id: str
    status: RunStatus
    rounds_completed: int
    final_accuracy: float | None
    best_accuracy: float | None
    final_loss: float | None
    sim_time_s: float
    wall_time_s: float
    bytes_up: int
    bytes_down: int
    stop_reason: str = ""

    def __post_init__(self) -> None:
        """Validate and normalise the fields.

        Raises:
            DataError: a field breaks its rule; the message names field, value and rule.
        """
        ev = f"RunFinished({self.run_id!r})"
        if not isinstance(self.run_id, str) or not self.run_id:
            raise _fail(ev, "run_id", self.run_id, "must be a non-empty str")
        try:
            _set(self, "status", RunStatus(self.status))
        except ValueError:
            raise _fail(ev, "status", self.status, f"must be one of {list(RunStatus)}") from None
        for name in ("rounds_completed", "bytes_up", "bytes_down"):  # totals: no int64 cap
            _check_int(ev, name, getattr(self, name), high=None)
        for name in ("final_accuracy", "best_accuracy"):
            _set(self, name, _check_accuracy(ev, name, getattr(self, name)))
        _set(self, "final_loss", _check_loss(ev, "final_loss", self.final_loss))
        for name in ("sim_time_s", "wall_time_s"):
            _set(self, name, _check_seconds(ev, name, getattr(self, name)))
        if not isinstance(self.stop_reason, str):
            raise _fail(ev, "stop_reason", self.stop_reason, "must be a str")


MetricEvent: TypeAlias = RoundMetrics | ClientFailure | RunStarted | RunFinished | FedEvalMetrics


@dataclass
class RunTotals:
    """Running totals over a run's rounds; turns into a :class:`RunFinished`.

    The simulator keeps one, ``add``s each round's metrics and calls ``finish`` at the
    end; the run store keeps its own to summarise runs that end without RunFinished.
    """

    rounds: int = 0
    final_accuracy: float | None = None
    best_accuracy: float | None = None
    final_loss: float | None = None
    sim_time_s: float = 0.0
    wall_time_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    clients_selected: int = 0
    clients_completed: int = 0
    clients_failed: int = 0
    clients_late: int = 0
    final_extras: dict[str, float] = field(default_factory=dict)
    final_stats: dict[str, StatsRecord] = field(default_factory=dict)
    final_fed_eval: dict[str, float] = field(default_factory=dict)

    def add_fed_eval(self, event: FedEvalMetrics) -> None:
        """Keep the last federated evaluation's means and worst 10% (and its round)."""
        self.final_fed_eval = {"round": float(event.round_idx), **event.headline()}

    def add(self, metrics: RoundMetrics) -> None:
        """Fold one round's metrics into the totals."""
        self.rounds += 1
        if metrics.accuracy is not None:
            self.final_accuracy = metrics.accuracy
            best = self.best_accuracy
            self.best_accuracy = metrics.accuracy if best is None else max(best, metrics.accuracy)
        if metrics.loss is not None:
            self.final_loss = metrics.loss
        self.sim_time_s = max(self.sim_time_s, metrics.sim_time_s)
        self.wall_time_s += metrics.wall_round_s
        self.bytes_up += metrics.bytes_up
        self.bytes_down += metrics.bytes_down
        self.clients_selected += metrics.clients_selected
        self.clients_completed += metrics.clients_completed
        self.clients_failed += metrics.clients_failed
        self.clients_late += metrics.clients_late
        self.final_extras.update(metrics.extras)
        self.final_stats.update((r.FAMILY, r) for r in metrics.stats())

    def finish(
        self,
        run_id: str,
        status: RunStatus,
        wall_time_s: float | None = None,
        stop_reason: str = "",
    ) -> RunFinished:
        """The RunFinished event for these totals.

        Args:
            run_id: the run's name.
            status: how it ended.
            wall_time_s: measured wall time; defaults to the sum of the rounds' wall times.
            stop_reason: why it stopped early.

        Raises:
            DataError: an argument breaks RunFinished's rules.
        """
        return RunFinished(
            run_id=run_id,
            status=status,
            rounds_completed=self.rounds,
            final_accuracy=self.final_accuracy,
            best_accuracy=self.best_accuracy,
            final_loss=self.final_loss,
            sim_time_s=self.sim_time_s,
            wall_time_s=self.wall_time_s if wall_time_s is None else wall_time_s,
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            stop_reason=stop_reason,
        )
