"""What secure aggregation in a tree costs each party: typed, for the simulated clocks.

:class:`~fedstrata.secagg.tree.TreeSecAgg` measures every party's protocol compute
(wall seconds of its state machine's calls, run serially in this process) and
counts its bytes from the messages' ``nbytes``. A tree driver charges
:class:`PartyCost` to the party's simulated clock and byte counters: devices to
their own clock and uplink/downlink (to their edge), edges and the center to the
aggregator's clock and ingress, regions (which only relay) to their links.

Phases: ``key_agreement_s`` is steps 0-2 of the protocol (setup, keys, shares; mask
expansion too with ``precompute_masks``), which a deployment runs while devices
train; ``masked_input_s`` is step 3 (a device masking its input, an aggregator
summing masked inputs); ``unmasking_s`` is step 4 (revealing shares, rebuilding
secrets, removing masks, and at the center removing the cluster masks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedstrata.core.metrics import SecAggTreeStats
from fedstrata.errors import SecAggError
from fedstrata.secagg.simulate import RoundStats
from fedstrata.secagg.tree_parties import EdgeParties, ProtocolInstance
from fedstrata.secagg.twotier import ClusterReport

__all__ = [
    "PartyCost",
    "TreeSecAggCost",
    "assemble_cost",
    "client_costs",
    "forward_report",
    "report_nbytes",
    "server_cost",
]

_ID_BYTES = 4


@dataclass(frozen=True)
class PartyCost:
    """One party's protocol compute and bytes in one round.

    Attributes:
        key_agreement_s: seconds in steps 0-2 (offline: overlaps training).
        masked_input_s: seconds masking (devices, edges as outer clients) or summing
            masked inputs (edges as inner servers, the center).
        unmasking_s: seconds in step 4 (incl. the center's cluster-mask removal).
        bytes_up: bytes sent towards the center (devices: to their edge; edges: to
            the center; regions: relayed up).
        bytes_down: bytes received from the tier above.
        bytes_from_below: aggregators: bytes received from the tier below (ingress).
        bytes_to_below: aggregators: bytes sent to the tier below.
    """

    key_agreement_s: float = 0.0
    masked_input_s: float = 0.0
    unmasking_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_from_below: int = 0
    bytes_to_below: int = 0

    @property
    def online_s(self) -> float:
        """Seconds on the round's critical path (after the inputs exist)."""
        return self.masked_input_s + self.unmasking_s

    @property
    def total_s(self) -> float:
        """All of the party's protocol compute."""
        return self.key_agreement_s + self.online_s

    def __add__(self, other: PartyCost) -> PartyCost:
        return PartyCost(
            self.key_agreement_s + other.key_agreement_s,
            self.masked_input_s + other.masked_input_s,
            self.unmasking_s + other.unmasking_s,
            self.bytes_up + other.bytes_up,
            self.bytes_down + other.bytes_down,
            self.bytes_from_below + other.bytes_from_below,
            self.bytes_to_below + other.bytes_to_below,
        )


@dataclass(frozen=True)
class TreeSecAggCost:
    """Every party's cost of one tree round of secure aggregation.

    Attributes:
        devices: per client id (every client that started key agreement).
        edges: per edge name: inner server of its cluster plus outer client.
        regions: per region name: relayed bytes only (regions forward).
        center: the outer server plus the cluster-mask removal.
        wall_s: wall seconds this process spent in the component for the round (all
            parties serially, plus validation and decoding): what it adds to a
            simulated round's wall time.
    """

    devices: Mapping[int, PartyCost] = field(default_factory=dict)
    edges: Mapping[str, PartyCost] = field(default_factory=dict)
    regions: Mapping[str, PartyCost] = field(default_factory=dict)
    center: PartyCost = field(default_factory=PartyCost)
    wall_s: float = 0.0

    @property
    def compute_s(self) -> float:
        """Every party's protocol compute, summed."""
        parties = [*self.devices.values(), *self.edges.values(), self.center]
        return sum(p.total_s for p in parties)

    @property
    def device_bytes_up(self) -> int:
        """All devices' protocol bytes to their edges (masked inputs included)."""
        return sum(p.bytes_up for p in self.devices.values())

    def stats(self) -> SecAggTreeStats:
        """Summary figures for a round's metrics (``RoundMetrics.secagg_tree``)."""
        devices = list(self.devices.values()) or [PartyCost()]
        edges = list(self.edges.values()) or [PartyCost()]
        return SecAggTreeStats(
            wall_s=self.wall_s,
            compute_s=self.compute_s,
            device_s_max=max(p.total_s for p in devices),
            device_online_s_max=max(p.online_s for p in devices),
            edge_s_max=max(p.total_s for p in edges),
            center_s=self.center.total_s,
            device_bytes_up_mean=float(np.mean([p.bytes_up for p in devices])),
            edge_bytes_up_mean=float(np.mean([p.bytes_up for p in edges])),
        )


def client_costs(stats: RoundStats) -> list[PartyCost]:
    """Per client of one protocol instance, its :class:`PartyCost`."""
    unmask = stats.client_online_s - stats.client_input_s
    return [
        PartyCost(
            float(stats.client_offline_s[i]),
            float(stats.client_input_s[i]),
            float(unmask[i]),
            int(stats.bytes_up[i]),
            int(stats.bytes_down[i]),
        )
        for i in range(len(stats.client_offline_s))
    ]


def server_cost(stats: RoundStats) -> PartyCost:
    """The server's :class:`PartyCost` in one protocol instance (bytes to/from below)."""
    return PartyCost(
        stats.server_offline_s,
        stats.server_input_s,
        stats.server_online_s - stats.server_input_s,
        bytes_from_below=int(stats.bytes_up.sum()),
        bytes_to_below=int(stats.bytes_down.sum()),
    )


def forward_report(parties: EdgeParties) -> ClusterReport:
    """The cluster report an edge that arrived forwards to the center.

    Raises:
        SecAggError: the edge was not closed by its inner protocol.
    """
    if parties.report is None:
        raise SecAggError(f"edge {parties.name!r}: no cluster report (edge not closed)")
    return parties.report


def report_nbytes(report: ClusterReport) -> int:
    """Wire size of a cluster report: threshold, round, survivor ids, the neighbour
    graph's size, degree and 8-byte seed, sealed boxes."""
    sealed = sum(box.nbytes for box in report.sealed)
    graph = 2 * _ID_BYTES + 8
    return 2 * _ID_BYTES + _ID_BYTES * len(report.survivors) + graph + sealed


def _edge_cost(
    index: int, parties: EdgeParties, outer: ProtocolInstance | None, outer_costs: list[PartyCost]
) -> PartyCost:
    cost = PartyCost()
    if parties.protocol is not None:
        cost = server_cost(parties.protocol.meter.stats())
    if outer is not None:
        cost = cost + outer_costs[index]
    if parties.arrived and parties.report is not None:
        sent = report_nbytes(parties.report)
        if outer is None and parties.value is not None:
            sent += _ID_BYTES * (2 + parties.value.shape[0])  # the value itself
        cost = cost + PartyCost(bytes_up=sent)
    return cost


def assemble_cost(
    edges: Mapping[str, EdgeParties],
    outer: ProtocolInstance | None,
    center_unmask_s: float,
    wall_s: float,
) -> TreeSecAggCost:
    """Every party's :class:`PartyCost` from the round's meters."""
    devices: dict[int, PartyCost] = {}
    for parties in edges.values():
        if parties.protocol is not None:
            costs = client_costs(parties.protocol.meter.stats())
            devices.update(zip(parties.ids, costs, strict=True))
    outer_costs = client_costs(outer.meter.stats()) if outer is not None else []
    edge_costs = {
        name: _edge_cost(i, parties, outer, outer_costs)
        for i, (name, parties) in enumerate(edges.items())
    }
    regions: dict[str, PartyCost] = {}
    for name, parties in edges.items():
        if parties.region is not None:
            c = edge_costs[name]
            relay = PartyCost(0.0, 0.0, 0.0, c.bytes_up, c.bytes_down, c.bytes_up, c.bytes_down)
            regions[parties.region] = regions.get(parties.region, PartyCost()) + relay
    center = PartyCost(unmasking_s=center_unmask_s)
    if outer is not None:
        center = center + server_cost(outer.meter.stats())
    up = sum(c.bytes_up for c in edge_costs.values())
    down = sum(c.bytes_down for c in edge_costs.values())
    center = PartyCost(
        center.key_agreement_s, center.masked_input_s, center.unmasking_s, 0, 0, up, down
    )
    return TreeSecAggCost(devices, edge_costs, regions, center, wall_s)
