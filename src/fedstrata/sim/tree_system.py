"""The tree driver's share of the twelve metrics: its links and its clients' fates.

The walk (:mod:`fedstrata.sim.tree_round`) tallies every transfer on the tree's links
as it times it (:func:`account_transfers`: the fair-shared finish against the finish on
the sender's own link is the wait for an over-subscribed link) and each node's
ingress; at the round's end :func:`tree_detail` adds the clients' training and fates
(from the walk's :class:`~fedstrata.sim.hooks.ClientReport` rows) and returns the
round's :class:`~fedstrata.core.metrics.SystemStats` and
:class:`~fedstrata.monitoring.devices.RoundDetail`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedstrata.coordinator.system_tally import SystemTally
from fedstrata.coordinator.topology import Tier, TopologyNode
from fedstrata.core.metrics import SystemStats
from fedstrata.monitoring.devices import NodeRound, RoundDetail
from fedstrata.sim.hooks import ClientReport

__all__ = ["NodeIngress", "account_transfers", "tree_detail"]


@dataclass
class NodeIngress:
    """What one aggregating node received in a round."""

    tier: Tier
    nbytes: int = 0
    last_s: float = 0.0


def account_transfers(
    system: SystemTally, clients: Sequence[int | None], transfer: tuple[np.ndarray, ...], *,
    up: bool,
) -> None:  # fmt: skip
    """Tally transfers: ``transfer`` is (bytes, link caps in bit/s, hop latency s,
    fair-shared seconds) per transfer; ``clients`` the device of each (None: a node)."""
    nbytes, caps, lat, fair = transfer
    own = 8.0 * nbytes / caps
    for cid, b, cap, hop, shared, alone in zip(
        clients, nbytes.tolist(), caps.tolist(), lat.tolist(), fair.tolist(), own.tolist(),
        strict=True,
    ):  # fmt: skip
        seconds = hop + shared
        wait = max(shared - alone, 0.0)
        system.link(int(b), seconds, cap / 8.0 * seconds, wait_s=wait, model=True)
        if cid is not None:
            system.legs(cid, 0.0 if up else seconds, seconds if up else 0.0)


def _homes(root: TopologyNode) -> dict[int, str]:
    return {c: n.name for n in root.walk() for c in n.clients}


def tree_detail(
    round_idx: int, system: SystemTally, root: TopologyNode, *, reports: Sequence[ClientReport],
    status: Mapping[int, tuple[str, float]], ingress: Mapping[str, NodeIngress],
    fpe: float, end_s: float, deadline_s: float | None,
) -> tuple[SystemStats, RoundDetail]:  # fmt: skip
    """The round's system record and detail (``status``: each client's worst fate and
    its time, as the walk marked it)."""
    homes, reported_failed = _homes(root), set[int]()
    for rep in reports:
        node = homes.get(rep.client_id, "")
        if rep.compute_s > 0:
            begin = rep.arrival_s - rep.up_s - rep.compute_s
            system.trained(rep.client_id, begin, rep.compute_s, rep.examples * fpe)
        if rep.status == "accepted":
            system.accepted(rep.client_id, rep.arrival_s, node)
        else:
            at = rep.arrival_s
            if rep.status == "late" and deadline_s is not None:
                at = min(at, system.start_s + deadline_s)
            system.failed(rep.client_id, at, late=rep.status == "late", node=node)
            reported_failed.add(rep.client_id)
    for cid, (fate, at) in status.items():
        if fate == "failed" and cid not in reported_failed:  # a failed edge, a sit-out
            system.failed(cid, at, node=homes.get(cid, ""))
    stats, devices = system.finish(end_s)
    accepted = {r.client_id for r in reports if r.status == "accepted"}
    below = {n.name: len(accepted.intersection(n.all_clients())) for n in root.walk()}
    nodes = tuple(
        NodeRound(
            name, str(n.tier), n.nbytes, below.get(name, 0), max(n.last_s - system.start_s, 0.0)
        )
        for name, n in sorted(ingress.items())
    )
    return stats, RoundDetail(round_idx, devices, nodes)
