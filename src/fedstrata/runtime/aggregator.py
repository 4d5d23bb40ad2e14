"""A stackable aggregator tier (an edge or a region) of the deployment runtime.

HierFAVG tiers (Liu et al., "Client-Edge-Cloud Hierarchical Federated Learning",
ICC 2020). Without a ``topology`` section a tier aggregates once per round of its
parent, as below; with an explicit tree (``tree``) it is one of its edges or regions
and runs that node's periods over its share of the cohort, exactly as the simulator's
tree (:mod:`fedstrata.runtime.tier_periods`). An :class:`TierAggregator`
registers with its parent (the center, or another tier) as **one participant**: it
holds a session with the parent like a client does. Below, it serves its own clients
exactly like the center does, through a :class:`~fedstrata.runtime.center.Center` of
its own (its :meth:`~fedstrata.runtime.center.Center.collect` runs one round without
applying it). Each round the parent selects it for, the tier

1. downloads the parent's model (the broadcast bytes are relayed unchanged),
2. runs the round on its connected clients with the parent's round index, seed and
   plan (so clients train exactly as under the center), folding their updates,
   compressed or dense, into a :class:`~fedstrata.aggregation.WeightedMean` partial in
   its cohort order,
3. submits the partial (``MeanState.to_arrays`` as .npz, chunked) to the parent,
   which merges it (``content=PARTIAL`` in the stream header); with a ``codec`` the
   partial's mean travels re-compressed instead of as a float64 sum
   (:mod:`fedstrata.runtime.partials`, the simulator's hop encoding).

A tier whose clients all failed submits an empty partial, which the parent records as
a failure of that participant. Tiers stack: a region is a :class:`TierAggregator`
whose children are tiers.

Liveness: a tier registers with its parent only once it has clients (it waits for all
of them at most the start timeout, then for one), and tells the parent how many it
reaches (in its ``Hello``, with every partial, and whenever the number changes), so the
parent's quorum counts
clients and no round is burnt on a tier without any. A tier left without clients
after a round leaves its parent and registers again when one connects. Its own wait
for clients in a round is bounded by the parent's deadline (or the start timeout).

Ownership and cancellation: :meth:`TierAggregator.run` owns the parent session for its
whole life; when it returns (the parent said ``DONE``) or is cancelled, its clients'
sessions are ended with ``DONE``. A broken parent connection ends it with
:class:`~fedstrata.errors.TransportError` (its clients then re-home or give up after
their retries), unless its ``reconnect`` hook reconnects it (to a standby center,
:mod:`fedstrata.runtime.relink`): then its clients keep their sessions and it
registers again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from fedstrata.aggregation.mean import MeanState
from fedstrata.compress.downlink import DownlinkMessage
from fedstrata.coordinator.topology import Tier, TopologyNode
from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.errors import FedstrataError, PayloadError, ProtocolError, TransportError
from fedstrata.pipeline.stage import Codec
from fedstrata.runtime.center import Center, RoundRecord, TaskKind, TaskSpec, encode_partial
from fedstrata.runtime.client_link import decode_model
from fedstrata.runtime.downlink import local_model
from fedstrata.runtime.fedeval_parts import relay_evaluation
from fedstrata.runtime.parent_link import ParentLink, Reconnect, TierReport, session_of
from fedstrata.runtime.partials import encode_compressed_partial
from fedstrata.runtime.secagg_tier import EdgeSecure
from fedstrata.runtime.tier_combos import accepted_clients, lone_share
from fedstrata.runtime.tier_periods import TreeSpec, run_periods

if TYPE_CHECKING:  # the monitor's module imports the recorder, which builds tiers
    from fedstrata.runtime.monitor import TierMonitor
    from fedstrata.runtime.tier_work import TierFollower

__all__ = ["TierAggregator"]

log = logging.getLogger(__name__)


class TierAggregator:
    """One aggregator tier; see the module docstring.

    Args:
        parent: the connection to the parent (entered by the caller).
        center: the client-facing center of this tier (``Deployment.edge``), served to
            its clients by a :class:`~fedstrata.runtime.wire.CenterServer`.
        size: parameters of the model.
        monitor: sends each round to the tier's metric sinks (None: none).
        codec: re-compresses the partial for the hop up, with its own error feedback
            (None: the exact float64 partial).
        tier_id: this tier's participant id at its parent (keys the error feedback).
        reconnect: failover: called when the parent link breaks; True once it is back.
        secure: two-tier secure aggregation's edge half (``Deployment.tier`` sets
            it): the tier submits its masked cluster sum instead of a partial.
        tree: the configured tree (``topology.edges``): the tier is one of its edges
            and runs its periods (:mod:`fedstrata.runtime.tier_periods`).
        node: this edge's name in ``tree`` (None: the edge its clients belong to).
    """

    def __init__(
        self,
        parent: ParentLink,
        center: Center,
        size: int,
        monitor: TierMonitor | None = None,
        *,
        codec: Codec | None = None,
        tier_id: int = -1,
        reconnect: Reconnect | None = None,
        secure: EdgeSecure | None = None,
        tree: TreeSpec | None = None,
        node: str | None = None,
    ) -> None:
        self.parent, self.center, self.size = parent, center, size
        self.monitor = monitor
        self.codec, self.tier_id = codec, tier_id
        self._run_id = ""  # the parent's run the downlink relay holds a model of
        self.reconnect = reconnect  # failover: True once the parent link is back
        self.secure = secure  # two-tier secure aggregation (secagg_tier.py)
        self.tree, self.node = tree, node  # an explicit tree's periods (tier_periods.py)
        self._formed = False  # the tree was checked at the first round
        self._local = False  # this round's model is the parent's local model (downlink)
        self.follower: TierFollower | None = None  # the center schedules the tree

    async def run(self) -> TierReport:
        """Serve the parent until it ends the run; then end the clients' sessions.

        Raises:
            ProtocolError: the parent refused the session.
            TransportError: the connection to the parent failed.
        """
        report = TierReport()
        try:
            while not await self._serve_or_reconnect(report):
                log.warning("tier: no clients left; leaving the parent until one connects")
        finally:
            self.center.finish()
        return report

    async def _serve_or_reconnect(self, report: TierReport) -> bool:
        """:meth:`_serve`; a broken parent connection is retried while ``reconnect``
        says so (its clients keep their sessions meanwhile)."""
        while True:
            try:
                return await self._serve(report)
            except TransportError as exc:
                if self.reconnect is None or not await self.reconnect(exc):
                    raise

    async def _serve(self, report: TierReport) -> bool:
        """One registration with the parent; True once the parent ended the run."""
        await self.center.await_start()
        live = self.center.connected
        log.info("tier: registering with the parent (%d clients connected)", live)
        tasks = self._session(live)
        reporter = asyncio.create_task(self._report_changes(live))
        try:
            async for task in tasks:
                if task.kind is TaskKind.DONE:
                    return True
                if task.kind is TaskKind.EVALUATE:  # federated evaluation (fedeval_parts.py)
                    await relay_evaluation(self.parent, self.center, task)
                    continue
                await self._round(task, report)
                if self.center.connected == 0:
                    return False
        finally:
            reporter.cancel()
            aclose = getattr(tasks, "aclose", None)
            if aclose is not None:
                await aclose()
        return True

    def _session(self, live: int) -> AsyncIterator[TaskSpec]:
        """A session with the parent; an explicit tree's tier names its node in its
        hello (the edge its clients belong to, or ``node``), so the parent refuses a
        second tier serving it (:class:`~fedstrata.errors.NodeClaimedError`).

        Raises:
            ConfigError: the connected clients are not all clients of one edge.
        """
        name = self.node if self._formed else None
        if self.tree is not None and not self._formed:
            name = self.tree.identify(sorted(self.center.roster.reach()), self.node).name
        f = self.follower  # forwards its clients' profiles (tier_sched.py)
        profiles = None if f is None else dict(f.profiles)
        return session_of(self.parent, live, node=name or "", profiles=profiles)

    def _changed(self, reported: int) -> bool:
        return self.center.connected != reported

    async def _report_changes(self, reported: int) -> None:
        """Tell the parent whenever the number of connected clients changes."""
        while True:
            await self.center.roster.wait(functools.partial(self._changed, reported), None)
            reported = self.center.connected
            try:
                await self.parent.report_live(reported)
            except FedstrataError as exc:  # the session's own error ends the tier
                log.warning("tier: could not report %d live clients: %s", reported, exc)
                return

    async def _round(self, task: TaskSpec, report: TierReport) -> None:
        r = task.round_idx
        try:
            params, relayed = await self._model(r, task.run_id)
        except (ProtocolError, PayloadError) as exc:
            log.warning("tier: round %d skipped: %s", r, exc)
            report.refused.append((r, str(exc)))
            return
        limit_s = task.deadline_s or self.center.settings.start_timeout_s
        try:
            outer = None if self.secure is None else await self.secure.begin(r)
            cohort = None if self.follower is None else self.follower.assign(task)
        except ProtocolError as exc:
            log.warning("tier: round %d skipped: %s", r, exc)
            report.refused.append((r, str(exc)))
            return
        node, adopted = self._place()
        if self.secure is not None and outer is not None:  # the masked cluster sum
            members = self._members(node, r, adopted, cohort)
            lone = lone_share(members, node, r)
            if lone is not None:  # the simulator's sit-out: no cluster sum to hide it in
                seed = self.secure.client.agg.codec.support_seed(task.root_seed, r)
                ok, why = await self.secure.sit_out(outer, r, seed, lone)
                report.refused.append((r, lone if ok else f"{lone}; the outer round: {why}"))
                return
            state, _ = await self._collect(
                task, params, relayed, report, limit_s=limit_s, members=members
            )
            if self.follower is not None:  # its members' reports (tier_sched.py)
                await self._report_members(r)
            ok, why = await self.secure.finish(
                outer, r, self.center.aggregator.finalize_metrics(state)
            )
            if not ok:
                log.warning("tier: round %d: outer secure aggregation refused: %s", r, why)
                report.refused.append((r, why))
            return
        hop: int | tuple[int, int]
        if node is not None and self.tree is not None:
            partial, hop, clients = await self._periods(
                node, task, params, relayed, report, adopted=adopted, cohort=cohort
            )
        else:
            state, record = await self._collect(
                task, params, relayed, report, limit_s=limit_s, members=None
            )
            partial, hop = _mean_of(state), self.tier_id
            clients = accepted_clients([record])
        log.info("tier: round %d: %d updates, weight %g", r, partial.count, partial.total_weight)
        live = self.center.connected
        data = self._encode(partial, task, hop, clients)
        if self.follower is None:
            accepted, reason = await self.parent.submit_partial(r, data, live)
        else:
            f = self.follower  # its members' reports, its clients' devices (tier_sched.py)
            accepted, reason = await self.parent.submit_partial(
                r, data, live, reports=f.take_reports(), profiles=dict(f.profiles)
            )
        if not accepted:
            log.warning("tier: round %d partial refused: %s", r, reason)
            report.refused.append((r, reason))

    def _members(
        self, node: TopologyNode | None, r: int, adopted: list[int], cohort: Sequence[int] | None
    ) -> list[int] | None:
        """An edge's share of round ``r``'s cohort (``cohort``: the center's scheduled
        draw; None: the seeded one), or None: no tree, or a region."""
        if self.tree is None or node is None or node.tier is not Tier.EDGE:
            return None
        return self.tree.members(node, self.tree.base(node, r), adopted, cohort)

    async def _report_members(self, r: int) -> None:
        """Under secure aggregation the masked sum goes up through the protocol's
        steps: the members' reports and the clients' profiles go first, in a partial
        header without data (as a report of live clients)."""
        f = self.follower
        assert f is not None
        ok, why = await self.parent.submit_partial(
            r, b"", self.center.connected, reports=f.take_reports(), profiles=dict(f.profiles)
        )
        if not ok:
            log.warning("tier: round %d: member reports refused: %s", r, why)

    def _place(self) -> tuple[TopologyNode | None, list[int]]:
        """This tier's edge of the tree (None: no tree) and the clients of other edges
        re-homed to it. The first round names the edge from its clients (or checks them
        against ``node``); later, other edges' clients are taken in as re-homed."""
        if self.tree is None:
            return None, []
        connected = sorted(self.center.roster.reach())
        if not self._formed:
            node = self.tree.identify(connected, self.node)
            self.node, self._formed = node.name, True
            missing = sorted(set(node.clients) - set(connected))
            if missing and node.tier is Tier.EDGE:
                log.warning("edge %s: its clients %s are not connected", node.name, missing)
            return node, []
        node = self.tree.identify([], self.node)
        adopted = self.tree.rehomed(node, connected)
        if adopted:
            log.warning("edge %s: serves re-homed clients %s", node.name, adopted)
        return node, adopted

    async def _collect(
        self, task: TaskSpec, params: FloatVector, relayed: bytes | None, report: TierReport,
        *, limit_s: float | None, members: list[int] | None,
    ) -> tuple[object, RoundRecord]:  # fmt: skip
        """One round on the tier's clients (no periods)."""
        r = task.round_idx
        if self.monitor is not None:
            self.monitor.round_started()
        state, record = await self.center.collect(
            r, params, model=relayed, task=task, limit_s=limit_s, members=members
        )
        report.rounds.append(record)
        if self.monitor is not None:
            self.monitor.round_done(r, record)
        return state, record

    async def _periods(
        self, node: TopologyNode, task: TaskSpec, params: FloatVector, relayed: bytes | None,
        report: TierReport, *, adopted: list[int], cohort: Sequence[int] | None,
    ) -> tuple[MeanState, tuple[int, int], tuple[int, ...]]:  # fmt: skip
        """The edge's periods (``kappa_edge`` edge rounds); the partial, its hop key and
        the clients accepted in every period."""
        assert self.tree is not None
        if self.monitor is not None:
            self.monitor.round_started()
        out = await run_periods(
            self.center, self.tree, node, task, params=params, relayed=relayed,
            adopted=adopted, fresh=not self._local, cohort=cohort,
        )  # fmt: skip
        report.rounds.extend(out.records)
        if self.monitor is not None:
            for record in out.records:  # one per edge (or region) round
                self.monitor.round_done(record.outcome.round_idx, record)
        hop = (self.tree.base(node, task.round_idx), self.tree.node_ids[node.name])
        return out.state, hop, accepted_clients(out.records)

    async def _model(self, round_idx: int, run_id: str) -> tuple[FloatVector, bytes | None]:
        """The parent's model and its broadcast bytes to relay unchanged; under downlink
        compression the model from the parent's message (the tier's clients are then
        answered from the tier's relay, ``Center.downlink``)."""
        relay = self.center.downlink
        if relay is None:
            model = await self.parent.download(round_idx)
            return decode_model(model, self.size), model.to_bytes()
        if run_id != self._run_id:  # a new run of the parent: its versions start afresh
            relay.reset()
            self._run_id = run_id
        data = await self.parent.download_downlink(round_idx, relay.relay_ask())
        local = local_model(DownlinkMessage.from_bytes(data), self.size)
        self._local = local is not None  # a region's local model: served dense below
        return (relay.relay(data, self.size) if local is None else local), None

    def _encode(
        self, partial: MeanState, task: TaskSpec, hop: int | tuple[int, int],
        clients: tuple[int, ...],
    ) -> bytes:  # fmt: skip
        """The partial for the wire: exact, or re-compressed (an empty one stays exact:
        the parent fails this tier for it), with its accepted ``clients``. ``hop``: the
        codec's key, this tier's id (its round is the task's), or an explicit tree's
        (first edge round, node id)."""
        if self.codec is None or partial.total_weight <= 0:
            return encode_partial(partial, clients)
        at, sender = (task.round_idx, hop) if isinstance(hop, int) else hop
        ctx = RoundContext(at, task.root_seed).for_client(sender)
        return encode_compressed_partial(partial, self.codec, ctx, clients)


def _mean_of(state: object) -> MeanState:
    if not isinstance(state, MeanState):
        raise ProtocolError(f"tier aggregator state is {type(state).__name__}, not a mean")
    return state
