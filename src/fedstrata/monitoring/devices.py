"""Per-device and per-tier figures of a round, and their per-device summary.

A driver that knows its clients' timings emits one :class:`RoundDetail` per round
(before the round's :class:`~fedstrata.monitoring.RoundMetrics`): a
:class:`DeviceRound` for each selected client and a :class:`NodeRound` for each
aggregating node of a tree. The run store keeps them in tables ``device_rounds``,
``device_totals`` and ``node_rounds`` (:mod:`fedstrata.monitoring._device_sql`) and
summarises them with :meth:`RunStore.device_stats` (:class:`DeviceStats`) and
:meth:`RunStore.tier_stats` (:class:`TierIngress`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from fedstrata.monitoring._checks import check_int, check_seconds, fail

__all__ = [
    "STRAGGLER_FACTOR",
    "DeviceRound",
    "DeviceStats",
    "DeviceStatus",
    "NodeRound",
    "RoundDetail",
    "TierIngress",
]

DeviceStatus = Literal["accepted", "late", "failed"]
_STATUSES = frozenset({"accepted", "late", "failed"})
STRAGGLER_FACTOR = 1.5
"""A client whose download + compute + upload took more than this times the round's
median client is a straggler (as is every client that missed the deadline)."""


@dataclass(frozen=True)
class DeviceRound:
    """One selected client in one round.

    Attributes:
        client_id: the client.
        status: ``accepted`` (its update was folded), ``late`` (missed the deadline) or
            ``failed`` (dropped out, or sent an invalid update).
        download_s: seconds it spent downloading the model (0: not measured).
        compute_s: seconds it spent training within the round.
        upload_s: seconds it spent uploading its update.
        straggler: late, or slower than :data:`STRAGGLER_FACTOR` x the round's median.
        utilization: ``compute_s`` over the round's duration (NaN: a round of no time).
        node: the edge aggregator it reported to ("" in a flat federation).
    """

    client_id: int
    status: DeviceStatus
    download_s: float
    compute_s: float
    upload_s: float
    straggler: bool
    utilization: float
    node: str = ""

    def __post_init__(self) -> None:
        """Validate the fields.

        Raises:
            DataError: a field breaks its rule (names it, its value and the rule).
        """
        ev = f"DeviceRound(client {self.client_id!r})"
        check_int(ev, "client_id", self.client_id)
        if self.status not in _STATUSES:
            raise fail(ev, "status", self.status, f"must be one of {sorted(_STATUSES)}")
        for name in ("download_s", "compute_s", "upload_s"):
            object.__setattr__(self, name, check_seconds(ev, name, getattr(self, name)))
        u = float(self.utilization)
        if not (math.isnan(u) or 0.0 <= u <= 1.0 + 1e-9):
            raise fail(ev, "utilization", self.utilization, "must be in [0, 1] or NaN")
        object.__setattr__(self, "utilization", u)
        if not isinstance(self.straggler, bool) or not isinstance(self.node, str):
            raise fail(ev, "straggler/node", (self.straggler, self.node), "must be bool/str")


@dataclass(frozen=True)
class NodeRound:
    """One aggregating node of a tree in one round.

    Attributes:
        node: the node's id (an edge or region name, or ``center``).
        tier: ``edge``, ``region`` or ``center``.
        ingress_bytes: bytes the node received.
        clients: clients below it whose update was folded.
        seconds: seconds from the round's start until its last input arrived.
    """

    node: str
    tier: str
    ingress_bytes: int
    clients: int
    seconds: float

    def __post_init__(self) -> None:
        """Validate the fields.

        Raises:
            DataError: a field breaks its rule.
        """
        ev = f"NodeRound({self.node!r})"
        if not isinstance(self.node, str) or not self.node or not isinstance(self.tier, str):
            raise fail(ev, "node/tier", (self.node, self.tier), "must be non-empty str")
        check_int(ev, "ingress_bytes", self.ingress_bytes)
        check_int(ev, "clients", self.clients)
        object.__setattr__(self, "seconds", check_seconds(ev, "seconds", self.seconds))


@dataclass(frozen=True)
class RoundDetail:
    """The per-device and per-node figures of one round (see the module docstring)."""

    round_idx: int
    devices: tuple[DeviceRound, ...] = ()
    nodes: tuple[NodeRound, ...] = ()

    def __post_init__(self) -> None:
        """Validate the round index and the rows' types.

        Raises:
            DataError: a negative round or a row of the wrong type.
        """
        ev = f"RoundDetail(round {self.round_idx!r})"
        check_int(ev, "round_idx", self.round_idx)
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        if not all(isinstance(d, DeviceRound) for d in self.devices):
            raise fail(ev, "devices", "...", "must hold DeviceRound rows")
        if not all(isinstance(n, NodeRound) for n in self.nodes):
            raise fail(ev, "nodes", "...", "must hold NodeRound rows")


@dataclass(frozen=True)
class DeviceStats:
    """One client over a run (:meth:`RunStore.device_stats`).

    Attributes:
        client_id: the client.
        rounds_selected: rounds it was selected for.
        rounds_completed: rounds its update was folded.
        utilization_mean: mean per-round utilization (NaN: never measurable).
        straggler_rounds: rounds it straggled.
        mean_compute_s: mean training seconds per selected round.
        mean_upload_s: mean upload seconds per selected round.
        node: the edge it last reported to ("" in a flat federation).
    """

    client_id: int
    rounds_selected: int
    rounds_completed: int
    utilization_mean: float
    straggler_rounds: int
    mean_compute_s: float
    mean_upload_s: float
    node: str = ""


@dataclass(frozen=True)
class TierIngress:
    """One aggregating node in one round (:meth:`RunStore.tier_stats`)."""

    node: str
    tier: str
    round_idx: int
    ingress_bytes: int
    clients: int
    seconds: float
