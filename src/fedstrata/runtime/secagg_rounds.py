"""The center's secure aggregation across rounds: one protocol round open at a time.

:class:`SecureRounds` is what a :class:`~fedstrata.runtime.center.Center` holds (its
``secure`` attribute): it opens a :class:`~.secagg_session.SecureRound` when a round
opens, routes the clients' ``Submit`` steps to it (refusing plaintext updates), tells
it of clients whose sessions ended and unmasks its sum when the round closes. On an
edge it keeps the cluster mask; at a center over edges its rounds are the outer
protocol (:mod:`.secagg_tier`). No gRPC in this module.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from fedstrata.errors import FedstrataError
from fedstrata.runtime.intake import RoundIntake
from fedstrata.runtime.records import UploadHeader
from fedstrata.runtime.sched_reports import RoundTimings
from fedstrata.runtime.secagg_session import SecureRound, StepReply
from fedstrata.runtime.secagg_wire import Phase
from fedstrata.runtime.transport import Reassembler
from fedstrata.secagg import SecAggAggregator
from fedstrata.secagg.config import SecAggConfig

if TYPE_CHECKING:
    from fedstrata.runtime.failover import AckGate

__all__ = ["Arrivals", "SecureRounds"]


class Arrivals(Protocol):
    """Who learns of each masked input's arrival (the center's scheduler)."""

    def arrived(
        self,
        client_id: int,
        timings: RoundTimings | None,
        upload_s: float,
        metrics: Mapping[str, float],
        round_idx: int | None = None,
    ) -> None: ...


@dataclass(eq=False)
class SecureRounds:
    """The center's secure aggregation across rounds (one :class:`SecureRound` open).

    Attributes:
        aggregator: the configuration's secure aggregator.
        phase_timeout_s: deadline of each collecting step.
        remove_self_masks: False on an edge (two-tier).
        center_public: two-tier: the center's key clients seal to (set per round by
            the edge from its parent's setup).
        config_for: the protocol's parameters for a cohort of n (None: the
            aggregator's, which the simulator's flat rounds use).
        round_type: :class:`SecureRound`, or the center's outer round of two tiers.
        arrivals: told of every ``INPUT`` step received in the open round (its client's
            timings, the upload's seconds, its metrics), as the scheduler is told of a
            plaintext update; set by :meth:`open` (None: nobody schedules).
    """

    aggregator: SecAggAggregator
    phase_timeout_s: float = 60.0
    remove_self_masks: bool = True
    center_public: bytes = b""
    config_for: Callable[[int], SecAggConfig] | None = None
    round_type: type[SecureRound] = SecureRound
    current: SecureRound | None = None
    history: list[SecureRound] = field(default_factory=list)
    arrivals: Arrivals | None = None
    ack_gate: AckGate | None = None  # a center node's: UNMASK answered once committed

    def open(self, intake: RoundIntake, arrivals: Arrivals | None = None) -> None:
        """A round opened: start its protocol (``arrivals``: the center's scheduler)."""
        self.arrivals = arrivals
        n = len(intake.rnd.cohort)
        config = None if self.config_for is None else self.config_for(n)
        self.current = self.round_type(
            self.aggregator, intake.rnd, intake, phase_timeout_s=self.phase_timeout_s,
            remove_self_masks=self.remove_self_masks, center_public=self.center_public,
            config=config,
        )  # fmt: skip
        self.history = [*self.history[-7:], self.current]  # the last rounds, for reports

    async def step(self, header: UploadHeader, phase: Phase, data: bytes) -> StepReply:
        """Route a step to the open round's protocol."""
        rnd = self.current
        if (
            rnd is None
            or rnd.rnd.round_idx != header.round_idx
            or (rnd.rnd.closed and (phase in (Phase.SETUP, Phase.KEYS, Phase.SHARES, Phase.INPUT)))
        ):
            why = f"no secure-aggregation step of round {header.round_idx} is open"
            if rnd is not None and (header.round_idx < rnd.rnd.round_idx or rnd.rnd.closed):
                why = f"late: {why}"  # the round closed (at its deadline) before it came
            return False, why, b""
        return await rnd.step(header, phase, data)

    async def submit(
        self, header: UploadHeader, chunks: AsyncIterator[bytes], *, run_id: str, limit: int
    ) -> StepReply:
        """A ``Submit`` to a center that runs secure aggregation: a protocol step of run
        ``run_id`` (at most ``limit`` bytes); a plaintext update is refused."""
        if header.secagg_phase == Phase.NONE:
            why = "secure aggregation: updates travel masked (protocol steps), not in the clear"
            return False, why, b""
        if header.run_id != run_id:
            return False, f"step for run {header.run_id or '(none)'}; this is run {run_id}", b""
        start = time.perf_counter()
        try:
            phase = Phase(header.secagg_phase)
            data = b""
            if header.total_bytes:  # SETUP carries no data
                reassembler = Reassembler(header.total_bytes, limit)
                async for chunk in chunks:
                    reassembler.add(chunk)
                data = reassembler.data()
        except (ValueError, FedstrataError) as exc:
            return False, f"malformed secure-aggregation step: {exc}", b""
        if phase is Phase.INPUT and self.arrivals is not None:
            upload_s = time.perf_counter() - start
            self.arrivals.arrived(
                header.client_id, header.timings, upload_s, header.metrics, header.round_idx
            )
        reply = await self.step(header, phase, data)
        if phase is Phase.UNMASK and reply[0] and self.ack_gate is not None:
            ok, why = await self.ack_gate.wait(header.round_idx)  # failover.py's rule
            return ok, why, reply[2]
        return reply

    def gone(self, cid: int) -> None:
        """``cid``'s session ended (a dropout of the open round's protocol)."""
        if self.current is not None:
            self.current.gone(cid)

    async def unmask(self) -> SecureRound | None:
        """The open round closed: unmask its sum (or abandon it)."""
        rnd = self.current
        if rnd is not None:
            await rnd.unmask()
        return rnd
