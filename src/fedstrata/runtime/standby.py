"""Active and standby centers: one :class:`CenterNode` per center process (issue 15 part 4).

Every center of a federation runs the same :class:`CenterNode`; the lease
(:mod:`fedstrata.runtime.lease`) decides which one is active. A node first *follows*:
it reads the lease every ``poll_s`` and takes it when it is free or has lapsed (see
the lease's clock assumptions). Then it *serves*:

1. it loads the newest good checkpoint from the shared store (none: a fresh run),
2. builds its center with the run's name and its lease epoch as the wire run id
   (``<name>.<epoch>``: a new term, so the previous center's calls are refused and
   clients start the term afresh), restores the model, the server optimizer's state
   and the :class:`~fedstrata.runtime.failover.StatePart` s,
3. listens, waits for the previous participants at most ``rejoin_timeout_s`` (then
   starts with the quorum), and runs the rounds after the last committed one. The
   round that was open when the previous center died is run again,
4. commits every round (:class:`~fedstrata.runtime.failover.RoundCommitter`: the
   checkpoint is durable before any update of that round is acknowledged) while a
   :class:`~fedstrata.runtime.lease.LeaseKeeper` renews the lease.

Clients and aggregators hold the list of center addresses
(:class:`~fedstrata.runtime.relink.FailoverLink`) and reconnect to whichever listens.
A node that loses its lease stops serving at once (no reply, no ``DONE``). A live node
can lose it too: its renewals came late (a loaded host starving its process, a long
pause) and it fenced itself. :meth:`CenterNode.run` then follows again as a standby,
so the federation keeps a standby (and the node may take over again from the newest
checkpoint, in a new term); a deposed node does not end the run's chances. After the
last round the active node releases the lease; a standby that then takes it finds the
run complete and returns.

Ownership and cancellation: :meth:`CenterNode.run` owns the server and the keeper;
cancelling it is a crash as far as the others can tell (the lease is not released, it
lapses).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fedstrata.checkpoint.stats import SaveTracker
from fedstrata.core.metrics import ResilienceStats
from fedstrata.core.params import FloatVector
from fedstrata.runtime.build import DEFAULT_START_TIMEOUT_S, Deployment
from fedstrata.runtime.center import Center, RoundRecord, RuntimeResult
from fedstrata.runtime.downlink import DownlinkPart
from fedstrata.runtime.dp_center import DpPart
from fedstrata.runtime.failover import (
    AfterRound,
    CenterSnapshot,
    RoundCommitter,
    SnapshotSink,
    StatePart,
)
from fedstrata.runtime.lease import LeaseKeeper, LeaseLost, LeaseTiming, SqlLease, Watch
from fedstrata.runtime.secagg_failover import SecAggPart, term_run_id
from fedstrata.runtime.security import TlsFiles, TokenTable
from fedstrata.runtime.wire import CenterServer

__all__ = ["CenterNode", "FailoverSettings", "NodeOutcome", "OnRound", "Takeover", "follow"]

log = logging.getLogger(__name__)

OnRound = Callable[[int, RoundRecord, FloatVector, ResilienceStats], None]
"""``on_round(round_idx, record, params, stats)`` after each round this node served and
committed, with the round's checkpoint and failover figures."""


@dataclass(frozen=True)
class FailoverSettings:
    """Timing of a center node.

    Attributes:
        lease: lease length and clock-rate bound.
        poll_s: how often a standby reads the lease.
        start_timeout_s: how long a fresh run's first round waits for every
            participant (then it starts with the quorum).
        rejoin_timeout_s: how long a resumed center waits for the participants the
            checkpoint lists before it starts with the quorum.
        keepalive_s: HTTP/2 ping interval of the server (the sessions' heartbeat).
        linger_s: how long the last center keeps serving after the last round, so a
            participant that was reconnecting learns that the run is over (its
            session is refused: "the run is over") instead of searching on.
    """

    lease: LeaseTiming = field(default_factory=LeaseTiming)
    poll_s: float = 0.1
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    rejoin_timeout_s: float = 2.0
    keepalive_s: float = 2.0
    linger_s: float = 2.0


@dataclass
class NodeOutcome:
    """What a node did: its term, the round it started at and its result.

    Times are ``time.monotonic()`` (system-wide on Linux, so comparable between
    processes of one host): ``acquired_at`` when it took the lease, ``serving_at``
    when its first round opened (the federation accepts updates again).
    """

    epoch: int
    start_round: int
    result: RuntimeResult | None = None
    acquired_at: float = 0.0
    serving_at: float | None = None
    save_s: list[float] = field(default_factory=list)
    completed_before: bool = False  # the run was already complete when it took over
    deposed: bool = False  # this term ended with the lease lost while serving
    lapsed_since: float | None = None  # the previous holder's last renewal seen
    restore_s: float | None = None  # loading the checkpoint it resumed from


class CenterNode:
    """One center process of a federation with standbys; see the module docstring.

    Args:
        dep: the deployment (configuration, model).
        lease: the federation's lease, as this node.
        sink: the checkpoint tiers; the durable one is shared by every center node.
        address: ``host:port`` to serve on when active.
        tokens: bearer tokens of every participant.
        tls: the server's PEM files; ``mutual`` requires client certificates.
        settings: lease and waits.
        participants: aggregator tiers below the center (None: clients connect).
        parts: extra state carried in checkpoints (e.g. a DP accountant).
    """

    def __init__(
        self,
        dep: Deployment,
        *,
        lease: SqlLease,
        sink: SnapshotSink,
        address: str,
        tokens: TokenTable,
        tls: TlsFiles | None = None,
        mutual: bool = False,
        settings: FailoverSettings | None = None,
        participants: int | None = None,
        parts: Sequence[StatePart] = (),
    ) -> None:
        self.dep, self.lease, self.sink, self.address = dep, lease, sink, address
        self.tokens, self.tls, self.mutual = tokens, tls, mutual
        self.settings = settings or FailoverSettings()
        self.participants, self.parts = participants, parts
        self.center: Center | None = None
        self.on_round: OnRound | None = None  # e.g. the run directory's recorder
        self.terms: list[NodeOutcome] = []  # every term this node served, in order

    async def run(self) -> NodeOutcome:
        """Follow until this node holds the lease, then serve the rest of the run.

        A term that ends with the lease lost (this node was deposed while alive: see
        the module docstring) is followed by following again; every term is in
        :attr:`terms`, the last one (the one that saw the run end) is returned.

        Raises:
            CheckpointCorrupt: the newest checkpoint is not a center snapshot.
        """
        while True:
            taken = await follow(self.lease, self.settings)
            try:
                return await self.take_over(taken)
            except LeaseLost as exc:
                self.terms[-1].deposed = True
                log.warning(
                    "center %s: deposed in epoch %d (%s); following again as a standby",
                    self.lease.holder, taken.epoch, exc,
                )  # fmt: skip

    async def take_over(self, taken: Takeover | int) -> NodeOutcome:
        """Serve the rest of the run as the holder of lease ``epoch`` (see :meth:`run`).

        Raises:
            LeaseLost: the lease lapsed while serving (this node stopped).
            CheckpointCorrupt: the newest checkpoint is not a center snapshot.
        """
        if isinstance(taken, int):
            taken = Takeover(taken)
        epoch = taken.epoch
        outcome = NodeOutcome(epoch, 0, acquired_at=time.monotonic())
        outcome.lapsed_since = taken.lapsed_since
        self.terms.append(outcome)
        start = time.perf_counter()
        base = self._base(epoch)
        outcome.restore_s = time.perf_counter() - start if base.round_idx >= 0 else None
        outcome.start_round = base.round_idx + 1
        if outcome.start_round >= self.dep.config.rounds.rounds:
            log.warning("center: the run was complete at round %d; nothing to do", base.round_idx)
            outcome.completed_before = True
            await asyncio.to_thread(self.lease.release, epoch)
            return outcome
        await self._serve(epoch, base, outcome)
        return outcome

    async def follow(self) -> int:
        """Wait as a standby until this node takes the lease; returns its epoch."""
        return (await follow(self.lease, self.settings)).epoch

    def _base(self, epoch: int) -> CenterSnapshot:
        """The snapshot this term starts from: the newest checkpoint, or a fresh run."""
        found = self.sink.latest()
        if found is None:
            params = self.dep.initial_params()
            return CenterSnapshot(-1, params, {}, secrets.token_hex(6), epoch)
        snap = CenterSnapshot.from_bytes(found[1])
        log.warning(
            "center: resuming run %s after round %d (checkpoint of epoch %d)",
            snap.run_name, snap.round_idx, snap.epoch,
        )  # fmt: skip
        for part in self.parts:
            if part.name in snap.parts:
                part.restore(snap.parts[part.name])
        return replace(snap, epoch=epoch)

    def _center(self, base: CenterSnapshot) -> Center:
        s, resumed = self.settings, base.round_idx >= 0
        wait_s = s.rejoin_timeout_s if resumed else s.start_timeout_s
        center = self.dep.center(participants=self.participants, start_timeout_s=wait_s)
        center.run_id = term_run_id(base.run_name, base.epoch)
        if resumed:  # wait for the participants it had
            center.settings = replace(center.settings, start_clients=len(base.participants))
        return center

    async def _serve(self, epoch: int, base: CenterSnapshot, outcome: NodeOutcome) -> None:
        center = self.center = self._center(base)
        keeper = LeaseKeeper(self.lease, epoch, self.settings.lease)
        parts = [*self.parts, *_center_parts(center, base)]
        committer = RoundCommitter(
            self.sink, base, run_id=center.run_id, participants=center.roster.reach,
            fence=keeper.remaining_s, parts=parts, margin_s=self.settings.lease.lease_s / 4,
        )  # fmt: skip
        center.after_round = self._after_round(committer, outcome, base)
        center.ack_gate = committer.gate
        if center.secure is not None:  # unmasking answered once the round is committed
            center.secure.ack_gate = committer.gate
        outcome.save_s = committer.save_s
        params, opt_state = base.params, _opt_state(center, base)
        server = CenterServer(
            center, self.tokens, address=self.address, tls=self.tls, mutual=self.mutual,
            keepalive_s=self.settings.keepalive_s,
        )  # fmt: skip
        committer.on_fenced = server.abort
        async with server:
            run = asyncio.create_task(
                center.run(params, start_round=base.round_idx + 1, opt_state=opt_state)
            )
            watched = [asyncio.create_task(t) for t in (keeper.run(), keeper.lost.wait())]
            watched.append(asyncio.create_task(self._opened(center, outcome)))
            try:
                await asyncio.wait([run, watched[1]], return_when=asyncio.FIRST_COMPLETED)
                if not run.done():
                    raise LeaseLost(f"center {self.lease.holder}: lease of epoch {epoch} lost")
                outcome.result = run.result()
                await asyncio.sleep(self.settings.linger_s)
            except BaseException:  # stop before the run says DONE: calls break, no reply
                committer.fence = _stopped  # nor commit a round its broken calls closed
                await server.abort()
                raise
            finally:
                for task in (run, *watched):
                    task.cancel()
        await asyncio.to_thread(self.lease.release, epoch)

    def _after_round(
        self, committer: RoundCommitter, outcome: NodeOutcome, base: CenterSnapshot
    ) -> AfterRound:
        """Commit the round, then tell ``on_round`` with its resilience record."""
        tracker = SaveTracker(lambda: getattr(self.sink, "timings", {}))
        terms = {h.run_id for h in base.history}

        async def after(round_idx: int, rec: RoundRecord, params: FloatVector, opt: Any) -> None:
            await committer(round_idx, rec, params, opt)
            if self.on_round is None:
                return
            first = round_idx == outcome.start_round and base.round_idx >= 0
            recovery = None
            if first and outcome.lapsed_since is not None and outcome.serving_at is not None:
                recovery = outcome.serving_at - outcome.lapsed_since
            stats = tracker.record(
                critical_s=committer.save_s[-1],
                failovers=len(terms | {committer.run_id}) - 1,
                recovery_s=recovery,
                restore_s=outcome.restore_s if first else None,
            )
            self.on_round(round_idx, rec, params, stats)

        return after

    @staticmethod
    async def _opened(center: Center, outcome: NodeOutcome) -> None:
        """Note when the first round of this term opened."""
        first = outcome.start_round
        while center.coordinator.round_idx < first:
            await asyncio.sleep(0.01)
        outcome.serving_at = time.monotonic()


@dataclass(frozen=True)
class Takeover:
    """A lease taken: its epoch, and when the node last saw the previous holder renew
    (``time.monotonic()``; None: the lease was free, nobody was lost)."""

    epoch: int
    lapsed_since: float | None = None


async def follow(lease: SqlLease, settings: FailoverSettings) -> Takeover:
    """Wait as a standby until ``lease``'s holder takes it."""
    watch = Watch(settings.lease)
    while True:
        row = await asyncio.to_thread(lease.read)
        watch.observe(row)
        if watch.may_take():
            epoch = await asyncio.to_thread(lease.acquire, row)
            if epoch is not None:
                lapsed = row is not None and not row.free
                was = row.holder if lapsed and row is not None else "none"
                log.warning("center %s: active (epoch %d; was %s)", lease.holder, epoch, was)
                return Takeover(epoch, watch.since if lapsed else None)
        await asyncio.sleep(settings.poll_s)


def _stopped() -> float:
    """The fence of a node that stopped serving: no validity left, nothing commits."""
    return 0.0


def _center_parts(center: Center, base: CenterSnapshot) -> list[StatePart]:
    """The center's own state carried in its checkpoints (its DP budget, the secure
    aggregator's record: :mod:`~fedstrata.runtime.secagg_failover`, the downlink
    encoder), restored from ``base`` where it holds them."""
    parts: list[StatePart] = [] if center.dp is None else [DpPart(center.dp)]
    if center.secure is not None:
        parts.append(SecAggPart(center.secure.aggregator))
    if center.downlink is not None:  # resumed by Center.run's downlink.start
        parts.append(DownlinkPart(center.downlink))
    for part in parts:
        if part.name in base.parts:
            part.restore(base.parts[part.name])
    return parts


def _opt_state(center: Center, base: CenterSnapshot) -> object | None:
    """The server optimizer's state restored from ``base`` (None: a fresh run)."""
    if base.round_idx < 0:
        return None
    fresh = center.server_optimizer.init(base.params)
    load: Callable[..., object] | None = getattr(type(fresh), "from_arrays", None)
    return fresh if load is None else load(base.opt_state)
