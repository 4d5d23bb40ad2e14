"""A stackable aggregator tier (an edge or a region) of the deployment runtime.

HierFAVG-style tiers (Liu et al., "Client-Edge-Cloud Hierarchical Federated Learning",
ICC 2020) with one aggregation per tier per round. An :class:`TierAggregator`
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
   which merges it (``content=PARTIAL`` in the stream header).

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
:class:`~fedstrata.errors.TransportError` (its clients then give up after their
retries).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from fedstrata.aggregation.mean import MeanState
from fedstrata.core.payload import Payload
from fedstrata.errors import FedstrataError, PayloadError, ProtocolError
from fedstrata.runtime.center import Center, RoundRecord, TaskKind, TaskSpec, encode_partial
from fedstrata.runtime.client import decode_model
from fedstrata.runtime.secagg_tier import EdgeSecure

__all__ = ["ParentLink", "TierAggregator", "TierReport"]

log = logging.getLogger(__name__)


class ParentLink(Protocol):
    """What a tier needs from its connection to its parent (``GrpcLink`` has it)."""

    def session(self, live_clients: int = 0) -> AsyncIterator[TaskSpec]: ...

    async def download(self, round_idx: int) -> Payload: ...

    async def submit_partial(
        self, round_idx: int, data: bytes, live_clients: int = 0
    ) -> tuple[bool, str]: ...

    async def report_live(self, live_clients: int) -> None: ...


@dataclass
class TierReport:
    """What a tier did: its rounds' records and the parent's refusals."""

    rounds: list[RoundRecord] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)


class TierAggregator:
    """One aggregator tier; see the module docstring.

    Args:
        parent: the connection to the parent (entered by the caller).
        center: the client-facing center of this tier (``Deployment.edge``), served to
            its clients by a :class:`~fedstrata.runtime.wire.CenterServer`.
        size: parameters of the model.
        secure: two-tier secure aggregation's edge half (``Deployment.tier`` sets
            it): the tier submits its masked cluster sum instead of a partial.
    """

    def __init__(
        self, parent: ParentLink, center: Center, size: int, secure: EdgeSecure | None = None
    ) -> None:
        self.parent, self.center, self.size = parent, center, size
        self.secure = secure  # two-tier secure aggregation (secagg_tier.py)

    async def run(self) -> TierReport:
        """Serve the parent until it ends the run; then end the clients' sessions.

        Raises:
            ProtocolError: the parent refused the session.
            TransportError: the connection to the parent failed.
        """
        report = TierReport()
        try:
            while not await self._serve(report):
                log.warning("tier: no clients left; leaving the parent until one connects")
        finally:
            self.center.finish()
        return report

    async def _serve(self, report: TierReport) -> bool:
        """One registration with the parent; True once the parent ended the run."""
        await self.center.await_start()
        live = self.center.connected
        log.info("tier: registering with the parent (%d clients connected)", live)
        tasks = self.parent.session(live_clients=live)
        reporter = asyncio.create_task(self._report_changes(live))
        try:
            async for task in tasks:
                if task.kind is TaskKind.DONE:
                    return True
                await self._round(task, report)
                if self.center.connected == 0:
                    return False
        finally:
            reporter.cancel()
            aclose = getattr(tasks, "aclose", None)
            if aclose is not None:
                await aclose()
        return True

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
            model = await self.parent.download(r)
            params = decode_model(model, self.size)
        except (ProtocolError, PayloadError) as exc:
            log.warning("tier: round %d skipped: %s", r, exc)
            report.refused.append((r, str(exc)))
            return
        limit_s = task.deadline_s or self.center.settings.start_timeout_s
        try:
            outer = None if self.secure is None else await self.secure.begin(r)
        except ProtocolError as exc:
            log.warning("tier: round %d skipped: %s", r, exc)
            report.refused.append((r, str(exc)))
            return
        state, record = await self.center.collect(
            r, params, model=model.to_bytes(), task=task, limit_s=limit_s
        )
        report.rounds.append(record)
        if self.secure is not None and outer is not None:  # the masked cluster sum
            ok, why = await self.secure.finish(
                outer, r, self.center.aggregator.finalize_metrics(state)
            )
            if not ok:
                log.warning("tier: round %d: outer secure aggregation refused: %s", r, why)
                report.refused.append((r, why))
            return
        partial = state if isinstance(state, MeanState) else None
        if partial is None:
            raise ProtocolError(f"tier aggregator state is {type(state).__name__}, not a mean")
        log.info("tier: round %d: %d updates, weight %g", r, partial.count, partial.total_weight)
        live = self.center.connected
        accepted, reason = await self.parent.submit_partial(r, encode_partial(partial), live)
        if not accepted:
            log.warning("tier: round %d partial refused: %s", r, reason)
            report.refused.append((r, reason))
