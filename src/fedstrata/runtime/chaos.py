"""Chaos on a real federation: the acknowledgement log and the processes (issue 15 part 5).

What "acknowledged" means: an update (a client's, or a tier's partial) is acknowledged
when a **center** replied ``SubmitReply(accepted=true)`` to it. The center replies only
after the round holding it is durable in the shared checkpoint store
(:mod:`fedstrata.runtime.failover`). An edge's reply to its own clients is provisional:
the edge's partial is what the center acknowledges, and an edge that dies loses its
subtree's updates of that round (never acknowledged by a center).

:class:`AckLog` wraps a participant's link and appends every acknowledgement
(participant, round, run term, who replied) to a file, flushed at once, so a process
SIGKILLed later leaves its acknowledgements behind. :func:`lost_acks` compares them
with the committed history of the final checkpoint: an acknowledged update whose
(round, term, participant) is not in it was lost.

:class:`ChaosSpec` describes a federation on loopback; the processes of
:mod:`fedstrata.runtime.chaos_procs` run its center nodes, edges and clients with
mutual TLS, as the runtime does; :mod:`fedstrata.runtime.chaos_run` starts them, kills
some and times every recovery.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedstrata.core.payload import Payload
from fedstrata.runtime.center import TaskSpec
from fedstrata.runtime.downlink import DownlinkAsk
from fedstrata.runtime.failover import CommittedRound
from fedstrata.runtime.parent_link import session_of
from fedstrata.runtime.sched_reports import DeviceReport, RoundTimings
from fedstrata.runtime.tier_work import MemberReport

__all__ = ["Ack", "AckLog", "ChaosSpec", "lost_acks"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ack:
    """One acknowledged update: who sent it, its round and run term, who replied."""

    participant: int
    round_idx: int
    run_id: str
    target: str


def lost_acks(acks: Sequence[Ack], history: Sequence[CommittedRound]) -> list[Ack]:
    """The acknowledged updates missing from the committed ``history``."""
    kept = {(h.round_idx, h.run_id, p) for h in history for p in h.accepted}
    return [a for a in acks if (a.round_idx, a.run_id, a.participant) not in kept]


class AckLog:
    """Acknowledgements seen by the links it wraps (in memory, and appended to ``path``).

    A line is ``{"ack": [participant, round, run_id, target]}`` or ``{"session":
    [participant, t, target]}`` (a session opened at ``time.monotonic()`` ``t``).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._acks: list[Ack] = []
        self.sessions: list[tuple[int, float, str]] = []
        self._file = None if path is None else path.open("a", encoding="utf-8")

    def wrap(self, link: Any, participant: int) -> _AckingLink:
        """``link`` (a client's or a tier's) with its acknowledgements recorded."""
        return _AckingLink(link, participant, self)

    def count(self) -> int:
        return len(self._acks)

    def entries(self) -> list[Ack]:
        return list(self._acks)

    def add(self, ack: Ack) -> None:
        self._acks.append(ack)
        self._write({"ack": [ack.participant, ack.round_idx, ack.run_id, ack.target]})

    def opened(self, participant: int, target: str) -> None:
        entry = (participant, time.monotonic(), target)
        self.sessions.append(entry)
        self._write({"session": list(entry)})

    def _write(self, line: Mapping[str, object]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()  # in the kernel's page cache: survives a SIGKILL

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    @staticmethod
    def read(path: Path) -> tuple[list[Ack], list[tuple[int, float, str]]]:
        """The acknowledgements and session openings written to ``path`` (a torn
        last line of a killed process is skipped)."""
        acks, sessions = [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "ack" in entry:
                p, r, run, target = entry["ack"]
                acks.append(Ack(int(p), int(r), str(run), str(target)))
            elif "session" in entry:
                p, t, target = entry["session"]
                sessions.append((int(p), float(t), str(target)))
        return acks, sessions


class _AckingLink:
    """A client's or tier's link whose accepted submissions are logged."""

    def __init__(self, link: Any, participant: int, log_: AckLog) -> None:
        self.link, self.participant, self.acks = link, participant, log_

    @property
    def run_id(self) -> str:
        return str(self.link.run_id)

    def _target(self) -> str:
        return str(getattr(self.link, "target", None) or "")

    async def session(
        self,
        live_clients: int = 0,
        profile: DeviceReport | None = None,
        node: str = "",
        *,
        profiles: Mapping[int, DeviceReport] | None = None,
    ) -> AsyncIterator[TaskSpec]:
        first = True
        tasks = session_of(self.link, live_clients, profile, node, profiles)
        async for task in tasks:
            if first:
                self.acks.opened(self.participant, self._target())
                first = False
            yield task

    async def download(self, round_idx: int) -> Payload:
        payload: Payload = await self.link.download(round_idx)
        return payload

    def _record(self, round_idx: int, reply: tuple[bool, str]) -> tuple[bool, str]:
        if reply[0]:
            self.acks.add(Ack(self.participant, round_idx, self.run_id, self._target()))
        return reply

    async def download_downlink(self, round_idx: int, ask: DownlinkAsk) -> bytes:
        data: bytes = await self.link.download_downlink(round_idx, ask)
        return data

    async def submit(
        self,
        round_idx: int,
        payload: Payload,
        num_examples: int,
        metrics: Mapping[str, float],
        timings: RoundTimings | None = None,
    ) -> tuple[bool, str]:
        reply = await self.link.submit(round_idx, payload, num_examples, metrics, timings)
        return self._record(round_idx, reply)

    async def secagg_step(
        self,
        round_idx: int,
        phase: int,
        data: bytes,
        *,
        metrics: Mapping[str, float] | None = None,
        support_seed: int = 0,
        timings: RoundTimings | None = None,
        num_examples: int = 0,
    ) -> tuple[bool, str, bytes]:
        reply: tuple[bool, str, bytes] = await self.link.secagg_step(
            round_idx, phase, data, metrics=metrics, support_seed=support_seed, timings=timings,
            num_examples=num_examples,
        )  # fmt: skip
        return reply

    async def submit_partial(
        self,
        round_idx: int,
        data: bytes,
        live_clients: int = 0,
        *,
        reports: Sequence[MemberReport] = (),
        profiles: Mapping[int, DeviceReport] | None = None,
    ) -> tuple[bool, str]:
        if not reports and profiles is None:
            reply = await self.link.submit_partial(round_idx, data, live_clients)
        else:  # an edge of a scheduled tree (tier_sched.py)
            reply = await self.link.submit_partial(
                round_idx, data, live_clients, reports=reports, profiles=profiles
            )
        return self._record(round_idx, reply)

    async def report_live(self, live_clients: int) -> None:
        await self.link.report_live(live_clients)

    async def download_eval(self, round_idx: int) -> Payload:
        payload: Payload = await self.link.download_eval(round_idx)
        return payload

    async def submit_eval(self, round_idx: int, report: bytes) -> tuple[bool, str]:
        reply: tuple[bool, str] = await self.link.submit_eval(round_idx, report)
        return reply

    async def reconnect(self) -> None:
        await self.link.reconnect()


@dataclass(frozen=True)
class ChaosSpec:
    """One federation on loopback: who runs where, and the shared files.

    Attributes:
        overrides: the configuration (``load_config(overrides=...)``).
        folder: PKI, tokens, lease database, checkpoint store and logs.
        centers: center nodes' addresses (the first started becomes active).
        edges: edge aggregators' addresses (empty: clients connect to the centers).
        spares: standby edges' addresses.
        groups: each edge's client ids (one group of every client without edges).
        lease_s, rejoin_timeout_s: center failover timing.
        spare_settle_s: how long a spare edge waits for more orphans before it
            registers with the center.
    """

    overrides: tuple[str, ...]
    folder: str
    centers: tuple[str, ...]
    edges: tuple[str, ...] = ()
    spares: tuple[str, ...] = ()
    groups: tuple[tuple[int, ...], ...] = ()
    lease_s: float = 1.0
    rejoin_timeout_s: float = 1.5
    spare_settle_s: float = 0.3

    @property
    def num_clients(self) -> int:
        return sum(len(g) for g in self.groups)

    def tier_id(self, k: int) -> int:
        """Participant id of edge ``k`` (spares follow the edges)."""
        return self.num_clients + k

    @property
    def participants(self) -> int:
        return self.num_clients + len(self.edges) + len(self.spares)

    def homes(self, cid: int) -> list[str]:
        """A client's targets: its edge, the spare edges, then the centers."""
        for k, group in enumerate(self.groups):
            if cid in group and self.edges:
                return [self.edges[k], *self.spares, *self.centers]
        return list(self.centers)
