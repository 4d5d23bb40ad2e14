"""Typed per-round statistics: what a feature recorded in a round, as fields.

Each feature that reports figures in a round returns one frozen record of its family:

==================  =====================  ==========================================
record              ``RoundMetrics`` field producer
==================  =====================  ==========================================
:class:`CodecStats`      ``codec``         the round's intake (uplink/downlink codecs)
:class:`PrivacySpent`    ``privacy``       the central-DP round hook (accountant)
:class:`ScheduleStats`   ``schedule``      the work-allocating client planner
:class:`TierStats`       ``tiers``         the tree driver (per-tier ingress)
:class:`AsyncStats`      ``fedbuff``       the FedBuff driver (staleness, in flight)
:class:`SecAggStats`     ``secagg``        the secure-aggregation round hook
:class:`SecAggTreeStats` ``secagg_tree``   the two-tier secure aggregation of a tree
:class:`PrecisionStats`  ``precision``     fp16 loss scaling (:func:`precision_stats`)
:class:`SystemStats`     ``system``        every driver (devices, links, failures)
:class:`ResilienceStats` ``resilience``    checkpoints (simulator), center failovers
==================  =====================  ==========================================

Records validate at construction and raise :class:`~fedstrata.errors.DataError`
naming the record, the field, the value and the rule: an ``int`` field holds a
non-negative int, a ``float`` field a float that is NaN (not measurable, e.g. the
utilization of a round without devices) or finite and, unless the record lists it in
``SIGNED``, non-negative. Optional fields (default ``None``) may be absent.

Run directories written before these records stored the same figures as named floats
in ``RoundMetrics.extras``; :func:`records_from_extras` maps those keys back (each
record's :meth:`~StatsRecord.legacy_keys`), so an old run directory loads typed.
``extras`` now holds only a task's own metrics (``test_<name>``, free-form by design).

This module is NumPy-free and sits in ``core`` so that every producer (privacy,
secure aggregation, scheduling, the simulator) can build its record. The base class
is :mod:`fedstrata.core.stats_record`; the privacy and secure-aggregation families
are :mod:`fedstrata.core.metrics_privacy` and the system family
:mod:`fedstrata.core.metrics_system`, the resilience family
:mod:`fedstrata.core.metrics_resilience`, listed here with the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import ClassVar, TypeAlias

from fedstrata.core.metrics_privacy import PrivacySpent, SecAggStats, SecAggTreeStats
from fedstrata.core.metrics_resilience import ResilienceStats
from fedstrata.core.metrics_system import SystemStats
from fedstrata.core.stats_record import StatsRecord
from fedstrata.errors import DataError

__all__ = [
    "STATS_RECORDS",
    "AnyStats",
    "AsyncStats",
    "CodecStats",
    "PrecisionStats",
    "PrivacySpent",
    "ResilienceStats",
    "ScheduleStats",
    "SecAggStats",
    "SecAggTreeStats",
    "StatsRecord",
    "SystemStats",
    "TierStats",
    "precision_stats",
    "record_from_dict",
    "records_from_extras",
]


@dataclass(frozen=True)
class CodecStats(StatsRecord):
    """What the update codecs did in a round.

    Attributes:
        uplink_ratio: dense float32 bytes of the uploads over the bytes sent (1 = dense).
        uplink_bytes_per_client: mean bytes one upload took.
        downlink_bytes_per_client: mean bytes one client downloaded.
        server_decode_s: wall seconds the server spent decoding (None: not measured).
        client_encode_s: mean wall seconds a client spent encoding (None: not reported).
        payload_ratio: the codec's own ratio, without a protocol's key and share
            messages (None: no such messages).
        protocol_sim_s: simulated seconds a protocol (secure aggregation) added after
            the uploads (None: none).
    """

    FAMILY: ClassVar[str] = "codec"

    uplink_ratio: float
    uplink_bytes_per_client: float
    downlink_bytes_per_client: float
    server_decode_s: float | None = None
    client_encode_s: float | None = None
    payload_ratio: float | None = None
    protocol_sim_s: float | None = None


@dataclass(frozen=True)
class ScheduleStats(StatsRecord):
    """How the work-allocating scheduler used the devices in a round.

    Attributes:
        mean_utilization: mean busy / round time over devices (NaN: no devices).
        min_utilization: the least-used device's utilization.
        mean_idle_s: mean seconds a device waited for the round to end.
        total_idle_s: device-seconds spent idle.
        throughput_eps: examples trained per simulated second.
        devices: devices counted.
        useful_utilization: mean share of the round spent on work that was folded.
        partial: clients that returned partial work.
        dropped: clients whose work was dropped.
        target_s: the round's planned duration.
        mean_steps: mean local steps planned.
        predictor_mape_last: the time predictor's MAPE this round (None: not yet).
        predictor_mape_cumulative: its MAPE over the run so far.
        skipped_infeasible: available devices left out of the round's draw as
            predicted unable to meet the deadline (None: the scheduler does not skip).
    """

    FAMILY: ClassVar[str] = "schedule"
    INTS: ClassVar[frozenset[str]] = frozenset(
        {"devices", "partial", "dropped", "skipped_infeasible"}
    )
    PREFIX: ClassVar[str] = "sched_"
    LEGACY: ClassVar[Mapping[str, str]] = {
        "predictor_mape_last": "predictor_mape_last",
        "predictor_mape_cumulative": "predictor_mape_cumulative",
    }

    mean_utilization: float
    min_utilization: float
    mean_idle_s: float
    total_idle_s: float
    throughput_eps: float
    devices: int
    useful_utilization: float
    partial: int
    dropped: int
    target_s: float
    mean_steps: float
    predictor_mape_last: float | None = None
    predictor_mape_cumulative: float | None = None
    skipped_infeasible: int | None = None


@dataclass(frozen=True)
class TierStats(StatsRecord):
    """Bytes each tier of a tree received in a round, and the work below the center.

    Attributes:
        center_ingress_bytes: bytes into the center.
        region_ingress_bytes: bytes into the regions.
        edge_ingress_bytes: bytes into the edges.
        edge_rounds: edge aggregation rounds run (κ per edge per round).
        client_updates: client updates folded at the edges.
    """

    FAMILY: ClassVar[str] = "tiers"
    INTS: ClassVar[frozenset[str]] = frozenset(
        {"center_ingress_bytes", "region_ingress_bytes", "edge_ingress_bytes"}
        | {"edge_rounds", "client_updates"}
    )

    center_ingress_bytes: int
    region_ingress_bytes: int
    edge_ingress_bytes: int
    edge_rounds: int
    client_updates: int


@dataclass(frozen=True)
class AsyncStats(StatsRecord):
    """A FedBuff server step: staleness of the buffered updates and work in flight.

    Attributes:
        staleness_mean: mean model versions an update lagged.
        staleness_max: largest lag.
        in_flight: clients training when the step was taken.
        throughput_eps: examples folded per simulated second since the last step.
        last_client_s: the step's last-arriving client's download+compute+upload time.
    """

    FAMILY: ClassVar[str] = "fedbuff"
    INTS: ClassVar[frozenset[str]] = frozenset({"in_flight"})
    PREFIX: ClassVar[str] = "async_"
    LEGACY: ClassVar[Mapping[str, str]] = {"throughput_eps": "sched_throughput_eps"}

    staleness_mean: float
    staleness_max: float
    in_flight: int
    throughput_eps: float
    last_client_s: float


@dataclass(frozen=True)
class PrecisionStats(StatsRecord):
    """fp16 dynamic loss scaling in a round, over the clients whose update was folded.

    Attributes:
        skipped_steps: optimizer steps skipped for inf/NaN gradients, summed over the
            clients.
        clients_skipping: clients that skipped at least one step.
        loss_scale_min: the smallest final loss scale a client reported.
    """

    FAMILY: ClassVar[str] = "precision"
    INTS: ClassVar[frozenset[str]] = frozenset({"skipped_steps", "clients_skipping"})
    PREFIX: ClassVar[str] = "precision_"

    skipped_steps: int
    clients_skipping: int
    loss_scale_min: float | None = None


def precision_stats(client_metrics: Iterable[Mapping[str, float]]) -> PrecisionStats | None:
    """The round's :class:`PrecisionStats` from its folded clients' training metrics
    (``skipped_steps``, ``loss_scale``); None when no client reports loss scaling
    (fp32 and bf16 training).

    Raises:
        DataError: the clients reported a negative ``skipped_steps``.
    """
    reports = [m for m in client_metrics if "skipped_steps" in m]
    if not reports:
        return None
    scales = [m["loss_scale"] for m in reports if "loss_scale" in m]
    return PrecisionStats(
        skipped_steps=round(sum(m["skipped_steps"] for m in reports)),
        clients_skipping=sum(1 for m in reports if m["skipped_steps"] > 0),
        loss_scale_min=min(scales) if scales else None,
    )


AnyStats: TypeAlias = (
    CodecStats
    | PrivacySpent
    | ScheduleStats
    | TierStats
    | AsyncStats
    | SecAggStats
    | SecAggTreeStats
    | PrecisionStats
    | SystemStats
    | ResilienceStats
)
STATS_RECORDS: tuple[type[StatsRecord], ...] = (
    CodecStats,
    PrivacySpent,
    ScheduleStats,
    TierStats,
    AsyncStats,
    SecAggStats,
    SecAggTreeStats,
    PrecisionStats,
    SystemStats,
    ResilienceStats,
)
_BY_FAMILY: dict[str, type[StatsRecord]] = {cls.FAMILY: cls for cls in STATS_RECORDS}


def record_from_dict(family: str, values: Mapping[str, object]) -> StatsRecord:
    """The record of ``family`` from its :meth:`~StatsRecord.as_dict` form.

    Raises:
        DataError: unknown family, unknown or missing fields, or invalid values.
    """
    cls = _BY_FAMILY.get(family)
    if cls is None:
        raise DataError(f"unknown statistics family {family!r}; known: {sorted(_BY_FAMILY)}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DataError(f"{cls.__name__}: unknown fields {unknown}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise DataError(f"{cls.__name__}: {exc}") from exc


def records_from_extras(
    extras: Mapping[str, float],
) -> tuple[dict[str, StatsRecord], dict[str, float]]:
    """Typed records recovered from a pre-typed ``extras`` mapping, and what is left.

    A family is recovered when every required field's legacy key (and at least one of
    its keys) is present; its keys
    are then removed from the remainder (a key two families share, such as
    ``sched_throughput_eps``, goes to each family that is complete). Keys no family
    claims (a task's ``test_<name>`` metrics) stay.

    Raises:
        DataError: a complete family's values are invalid.
    """
    found: dict[str, StatsRecord] = {}
    used: set[str] = set()
    for cls in STATS_RECORDS:
        keys = cls.legacy_keys()
        required = [f.name for f in fields(cls) if f.default is MISSING]
        if not all(keys[name] in extras for name in required):
            continue
        values = {name: extras[key] for name, key in keys.items() if key in extras}
        if not values:  # a family of optional fields only: none of its keys is there
            continue
        found[cls.FAMILY] = cls(**values)
        used.update(keys[name] for name in values)
    return found, {k: v for k, v in extras.items() if k not in used}
