"""The processes of a chaos run: center nodes, edges (and spares) and clients.

Each entry point runs one participant of a :class:`~fedstrata.runtime.chaos.ChaosSpec`
in its own process (started from a forkserver by :mod:`fedstrata.runtime.chaos_run`),
over mutual TLS, and puts its outcome on the ``out`` queue when it ends. Clients and
tiers log their acknowledgements (:class:`~fedstrata.runtime.chaos.AckLog`) to files
in the spec's folder.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from fedstrata.checkpoint import Checkpointer, Tier, open_store
from fedstrata.config import load_config
from fedstrata.errors import FedstrataError, ProtocolError, TransportError
from fedstrata.runtime.build import DEFAULT_START_TIMEOUT_S
from fedstrata.runtime.chaos import AckLog, ChaosSpec
from fedstrata.runtime.client_link import Backoff
from fedstrata.runtime.lease import LeaseTiming, SqlLease
from fedstrata.runtime.link import GrpcLink
from fedstrata.runtime.loader import deployment
from fedstrata.runtime.relink import FailoverLink, NoTargetError
from fedstrata.runtime.security import DevPki, TokenTable
from fedstrata.runtime.standby import CenterNode, FailoverSettings
from fedstrata.runtime.wire import CenterServer

__all__ = ["CHAOS_BACKOFF", "center_main", "client_main", "edge_main", "shared_sink"]

log = logging.getLogger(__name__)


def shared_sink(spec: ChaosSpec) -> Checkpointer:
    """The center nodes' checkpoints: one disk store in ``folder``, written every round."""
    store = open_store(str(Path(spec.folder) / "checkpoints"), keep=3)
    return Checkpointer([Tier(store, every_rounds=1)])


def center_main(
    spec: ChaosSpec, index: int, pki: DevPki, tokens: dict[int, str], out: Any
) -> None:
    """Center node ``index``: follows, takes over, serves (again after being deposed);
    puts one outcome per term it served on ``out``."""
    dep = deployment(load_config(overrides=list(spec.overrides)))
    settings = FailoverSettings(
        lease=LeaseTiming(spec.lease_s), poll_s=0.05, rejoin_timeout_s=spec.rejoin_timeout_s
    )
    lease = SqlLease(str(Path(spec.folder) / "registry.sqlite"), "chaos", f"center-{index}")
    node = CenterNode(
        dep, lease=lease,
        sink=shared_sink(spec), address=spec.centers[index], tokens=TokenTable(tokens),
        tls=pki.server, mutual=True, settings=settings,
        participants=len(spec.edges) or None,
    )  # fmt: skip
    asyncio.run(node.run())
    for term in node.terms:
        out.put(("center", index, term.epoch, term.start_round, term.serving_at,
                 term.completed_before, list(term.save_s), term.deposed))  # fmt: skip


def edge_main(spec: ChaosSpec, k: int, pki: DevPki, tokens: dict[int, str], out: Any) -> None:
    """Edge ``k`` (``k >= len(spec.edges)``: a spare) of the centers; serves its clients."""
    dep = deployment(load_config(overrides=list(spec.overrides)))
    spare = k >= len(spec.edges)
    address = spec.spares[k - len(spec.edges)] if spare else spec.edges[k]
    capacity = max(len(g) for g in spec.groups) if spare else len(spec.groups[k])
    wait_s = spec.spare_settle_s if spare else DEFAULT_START_TIMEOUT_S
    acks = AckLog(Path(spec.folder) / f"acks-edge-{k}.jsonl")

    async def main() -> int:
        center = dep.edge(capacity, start_timeout_s=wait_s)
        tid = spec.tier_id(k)
        chunks = center.settings.chunks

        def make(target: str) -> GrpcLink:
            return GrpcLink(target, tid, tokens[tid], tls=pki.client(tid), chunks=chunks)

        parent = FailoverLink(spec.centers, make, connect_timeout_s=10 * spec.lease_s)
        server = CenterServer(center, TokenTable(tokens), address=address, tls=pki.server,
                              mutual=True, keepalive_s=5.0)  # fmt: skip
        async with server, parent:
            tier = dep.tier(acks.wrap(parent, tid), center, tier_id=tid, reconnect=_retry(parent))
            try:
                return len((await tier.run()).rounds)
            except FedstrataError as exc:  # the run ended while it searched
                log.warning("tier %d: %s", tid, exc)
                return -1

    out.put(("edge", k, asyncio.run(main())))


def _retry(link: FailoverLink, attempts: int = 3) -> Any:
    """The tier's reconnection: search the centers again, ``attempts`` times in a row
    at most (each search lasts the link's ``connect_timeout_s``)."""
    failures = 0

    async def again(exc: TransportError) -> bool:
        nonlocal failures
        failures = failures + 1 if isinstance(exc, NoTargetError) else 0
        log.warning("tier: parent lost (%s); searching %s", exc, link.targets)
        await link.reconnect()
        return failures < attempts

    return again


def client_main(spec: ChaosSpec, cid: int, pki: DevPki, tokens: dict[int, str], out: Any) -> None:
    """Client ``cid``: trains until the run ends, re-homing along ``spec.homes(cid)``."""
    dep = deployment(load_config(overrides=list(spec.overrides)))
    acks = AckLog(Path(spec.folder) / f"acks-client-{cid}.jsonl")

    async def main() -> list[tuple[float, str]]:
        def make(target: str) -> GrpcLink:
            return GrpcLink(target, cid, tokens[cid], tls=pki.client(cid), keepalive_s=5.0)

        link = FailoverLink(spec.homes(cid), make, connect_timeout_s=10 * spec.lease_s)
        async with link:
            agent = dep.client(acks.wrap(link, cid), cid, backoff=CHAOS_BACKOFF)
            try:
                await agent.run()
            except ProtocolError as exc:  # came back after the run ended: it is over
                log.warning("client %d: %s", cid, exc)
        return [(s.at, s.target) for s in link.switches]

    out.put(("client", cid, asyncio.run(main())))


CHAOS_BACKOFF = Backoff(attempts=8, base_s=0.05, max_s=0.5)
