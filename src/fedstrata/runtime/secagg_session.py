"""Secure aggregation at a runtime center: one protocol round per federated round.

:class:`SecureRounds` drives the existing sans-IO server state machine
(:class:`~fedstrata.secagg.ServerProtocol`; never a second implementation) from the
clients' ``Submit`` steps (``StreamHeader.secagg_phase``, :mod:`.secagg_wire`):

1. ``SETUP`` (answered at once): the round, the public graph seed and the client's
   party id (its cohort position);
2. ``KEYS`` and 3. ``SHARES``: answered when the step closes: every live cohort member
   sent it, or the step's deadline passed (``phase_timeout_s``). Shares are relayed
   as the clients encrypted them: the center cannot read them;
4. ``INPUT``: the masked input is summed in place (the center never holds a client's
   unmasked update) and counts as the client's update for the round's coordinator; it
   is answered with the unmasking request once the round closes;
5. ``UNMASK``: the survivors' shares; then the sum is unmasked and decoded by the
   secure aggregator of the simulator (:meth:`SecAggAggregator.decode_total`).

Dropouts: a client whose session ends (or whose step call breaks) in any step is a
protocol dropout; its masks are recovered from its neighbours' shares. A round whose
secrets cannot all be rebuilt (too few clients in some step) is **abandoned**: the
protocol refuses before any share is revealed, the reason is logged at WARNING, the
model is unchanged (:func:`~fedstrata.coordinator.round_logic.server_step` catches
the :class:`~fedstrata.errors.SecAggError`). Below ``min_survivors`` (distributed DP)
nothing is unmasked and the round applies a zero update, as in the simulator.

Two-tier (an edge): ``remove_self_masks=False`` leaves the cluster mask on the sum
(the clients seal their self-mask shares to the center's key, :attr:`center_public`);
the edge forwards the sealed shares with its partial (:mod:`.secagg_tier`).
No gRPC in this module.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from fedstrata.core.params import FloatVector
from fedstrata.errors import FedstrataError, ProtocolError, SecAggError
from fedstrata.runtime.intake import RoundIntake
from fedstrata.runtime.records import OpenRound, UploadHeader
from fedstrata.runtime.secagg_wire import (
    Phase,
    SetupReply,
    decode_keys,
    decode_masked,
    decode_response,
    decode_shares,
    encode_bundle,
    encode_directory,
    encode_request,
    encode_setup,
)
from fedstrata.secagg import SecAggAggregator, ServerProtocol
from fedstrata.secagg.aggregator import RingState
from fedstrata.secagg.config import SecAggConfig
from fedstrata.secagg.messages import SealedShares
from fedstrata.secagg.prg import U32Vector

__all__ = ["SecureRound", "StepReply"]

log = logging.getLogger(__name__)

_WITHDREW = (
    "withdrew without an input (its key agreement failed, too little work, or its input "
    "of this round went to an earlier center term)"
)

StepReply = tuple[bool, str, bytes]
"""(accepted, reason, the center's answer)."""


@dataclass(eq=False)
class _Step:
    """One collecting step: who must send it, who did, and its answers once closed."""

    expected: set[int] = field(default_factory=set)
    received: set[int] = field(default_factory=set)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    replies: dict[int, bytes] = field(default_factory=dict)


class SecureRound:
    """The protocol of one open round at the center; see the module docstring.

    Args:
        aggregator: the secure aggregator of the configuration (protocol parameters,
            decoding; its own ``finalize`` is the simulator's and is not used here).
        rnd: the open round.
        intake: its intake (a masked input resolves its client).
        phase_timeout_s: how long a key or share step, or the unmasking, waits.
        remove_self_masks: False for an edge (the cluster mask stays on the sum).
        center_public: two-tier: the center's X25519 public key clients seal to.
        config: the protocol's parameters for this cohort (default: the aggregator's).
    """

    def __init__(
        self,
        aggregator: SecAggAggregator,
        rnd: OpenRound,
        intake: RoundIntake,
        *,
        phase_timeout_s: float,
        remove_self_masks: bool = True,
        center_public: bytes = b"",
        config: SecAggConfig | None = None,
    ) -> None:
        self.agg, self.rnd, self.intake = aggregator, rnd, intake
        self.timeout_s, self.center_public = phase_timeout_s, center_public
        cfg = aggregator.config if config is None else config
        self.server = ServerProtocol(cfg, rnd.round_idx, remove_self_masks=remove_self_masks)
        self.party = {cid: i for i, cid in enumerate(rnd.cohort)}
        self.dropped: set[int] = set()
        self.steps = {p: _Step() for p in (Phase.KEYS, Phase.SHARES, Phase.INPUT, Phase.UNMASK)}
        self.steps[Phase.KEYS].expected = set(self.party.values())
        self.abandoned: str | None = None
        self.withheld = False
        self.total: U32Vector | None = None
        self.seed: int | None = None
        self.received: list[tuple[Phase, int, int]] = []  # (step, party, bytes): the record
        self._timers: list[asyncio.Task[None]] = []
        self._opened = {Phase.KEYS}
        if len(rnd.cohort) > cfg.num_clients:
            self._abandon(
                f"cohort of {len(rnd.cohort)} exceeds the protocol's {cfg.num_clients} parties"
            )
        self._arm(Phase.KEYS)

    # ---- steps -------------------------------------------------------------------

    async def step(self, header: UploadHeader, phase: Phase, data: bytes) -> StepReply:
        """One client's step; answered when the step closes. Never raises for bad input."""
        cid = header.client_id
        party = self.party.get(cid)
        if party is None:
            return False, f"client {cid} is not in round {self.rnd.round_idx}'s cohort", b""
        self.received.append((phase, party, len(data)))
        try:
            if phase is Phase.SETUP:
                return True, "", encode_setup(self._setup(party))
            if phase is Phase.UNMASK:
                self._unmask_arrived(party, data)
                return True, "", b""
            if phase not in self.steps:
                self._other(phase, party, data)
                return True, "", b""
            if phase is Phase.INPUT and not data:  # it withdraws (SecureClient.withdraw)
                self._lose(party, _WITHDREW)
                return False, "withdrawn", b""
            self._arrive(phase, party, data, header)
            return await self._answer(phase, party)
        except FedstrataError as exc:
            self._lose(party, f"{phase.name.lower()} step refused: {exc}")
            return False, str(exc), b""
        except BaseException:  # the call broke: the client is a dropout
            self._lose(party, f"{phase.name.lower()} step interrupted")
            raise

    def _setup(self, party: int) -> SetupReply:
        cfg = self.server.config
        return SetupReply(
            self.server.setup(), party, cfg.num_clients, cfg.degree, cfg.threshold,
            self.center_public,
        )  # fmt: skip

    def _arrive(self, phase: Phase, party: int, data: bytes, header: UploadHeader) -> None:
        if self.abandoned is not None:
            raise SecAggError(f"round {self.rnd.round_idx} abandoned: {self.abandoned}")
        step = self.steps[phase]
        if step.closed.is_set():
            raise ProtocolError(f"round {self.rnd.round_idx}: the {phase.name} step is closed")
        if phase is Phase.KEYS:
            keys = decode_keys(data)
            _own(keys.client_id, party)
            self.server.receive_keys(keys)
        elif phase is Phase.SHARES:
            shares = decode_shares(data)
            _own(shares.client_id, party)
            self.server.receive_shares(shares)
        else:
            self._input_arrived(party, data, header)
        step.received.add(party)
        self._maybe_close(phase)

    def _other(self, phase: Phase, party: int, data: bytes) -> None:
        """A step this round does not take (an edge's cluster report at a flat center).

        Raises:
            ProtocolError: always here.
        """
        raise ProtocolError(f"round {self.rnd.round_idx}: no {phase.name} step in this round")

    def survivors(self) -> int:
        """Clients whose inputs are in the sum (flat: one per masked input)."""
        return len(self.steps[Phase.INPUT].received)

    def _unmasked(self, total: U32Vector) -> U32Vector:
        """The protocol's result turned into the clients' ring sum (flat: itself)."""
        return total

    def _input_arrived(self, party: int, data: bytes, header: UploadHeader) -> None:
        cfg = self.server.config
        masked = decode_masked(data, cfg.vector_length, cfg.modulus_bits)
        _own(masked.client_id, party)
        seed = header.support_seed
        if self.seed is not None and seed != self.seed:
            raise ProtocolError(f"random-k support seed {seed}, the round's is {self.seed}")
        self.server.receive_masked_input(masked)  # validated, then summed in place
        self.seed = seed
        reason = self.intake.accept_masked(header, len(data))
        if reason is not None:
            log.warning("round %d: masked input summed but %s", self.rnd.round_idx, reason)

    async def _answer(self, phase: Phase, party: int) -> StepReply:
        step = self.steps[phase]
        await step.closed.wait()
        reply = step.replies.get(party)
        if reply is None:
            why = self.abandoned or f"left out of the {phase.name} step"
            return False, why, b""
        return True, "", reply

    def _unmask_arrived(self, party: int, data: bytes) -> None:
        step = self.steps[Phase.UNMASK]
        if self.abandoned is not None or step.closed.is_set() or party not in step.expected:
            raise ProtocolError(f"round {self.rnd.round_idx}: no unmasking expected of it")
        response = decode_response(data)
        _own(response.client_id, party)
        self.server.receive_unmask(response)
        step.received.add(party)
        self._maybe_close(Phase.UNMASK)

    # ---- closing steps -----------------------------------------------------------

    def gone(self, cid: int) -> None:
        """``cid``'s session ended: a dropout in every step it has not reached."""
        party = self.party.get(cid)
        if party is not None:
            self._lose(party, "disconnected")

    def _lose(self, party: int, why: str) -> None:
        if party in self.dropped:
            return
        self.dropped.add(party)
        log.info("round %d: party %d is a protocol dropout (%s)", self.rnd.round_idx, party, why)
        self.intake.fail(self.rnd.cohort[party], f"secure aggregation: {why}")
        for phase in (Phase.KEYS, Phase.SHARES, Phase.UNMASK):
            self._maybe_close(phase)

    def _maybe_close(self, phase: Phase) -> None:
        step = self.steps[phase]
        if step.closed.is_set() or phase is Phase.INPUT:
            return
        if phase not in self._opened:
            return
        if step.expected - self.dropped <= step.received:
            self._close(phase)

    def _arm(self, phase: Phase) -> None:
        self._timers.append(asyncio.get_running_loop().create_task(self._deadline(phase)))

    async def _deadline(self, phase: Phase) -> None:
        await asyncio.sleep(self.timeout_s)
        step = self.steps[phase]
        if not step.closed.is_set():
            missing = sorted(step.expected - self.dropped - step.received)
            log.warning(
                "round %d: %s step deadline (%g s) passed; dropouts: parties %s",
                self.rnd.round_idx, phase.name, self.timeout_s, missing,
            )  # fmt: skip
            for party in missing:
                self._lose(party, f"missed the {phase.name} step's deadline")
            self._close(phase)

    def _close(self, phase: Phase) -> None:
        step = self.steps[phase]
        if step.closed.is_set():
            return
        step.closed.set()  # first: dropouts found while closing must not close it again
        try:
            if self.abandoned is None and phase is Phase.KEYS:
                dirs = self.server.close_keys()
                step.replies = {u: encode_directory(d) for u, d in dirs.items()}
                self._open(Phase.SHARES, self._viable({u: len(d.keys) for u, d in dirs.items()}))
            elif self.abandoned is None and phase is Phase.SHARES:
                bundles = self.server.close_shares()
                step.replies = {u: encode_bundle(b) for u, b in bundles.items()}
                sizes = {u: len(b.ciphertexts) for u, b in bundles.items()}
                self.steps[Phase.INPUT].expected = self._viable(sizes)
        except SecAggError as exc:
            self._abandon(str(exc))

    def _viable(self, peers: dict[int, int]) -> set[int]:
        """The parties that go on: a client with fewer than ``threshold`` neighbours
        left aborts the round by the protocol's rule, so it is a dropout now (nobody
        waits for it)."""
        threshold = self.server.config.threshold
        for party, count in peers.items():
            if count < threshold:
                self._lose(party, f"{count} neighbours left, below threshold {threshold}")
        return {party for party, count in peers.items() if count >= threshold}

    def _open(self, phase: Phase, expected: set[int]) -> None:
        self._opened.add(phase)
        self.steps[phase].expected = expected
        self._arm(phase)
        self._maybe_close(phase)

    def _abandon(self, why: str) -> None:
        if self.abandoned is None:
            self.abandoned = why
            log.warning(
                "round %d: secure aggregation abandoned, nothing unmasked: %s",
                self.rnd.round_idx, why,
            )  # fmt: skip
        for step in self.steps.values():
            step.replies.clear()
            step.closed.set()

    # ---- unmasking (after the round closed) ---------------------------------------

    async def unmask(self) -> None:
        """Close the inputs, collect the unmasking and unmask the sum (or abandon)."""
        inputs = self.steps[Phase.INPUT]
        survivors = self.survivors()
        try:
            if self.abandoned is not None or not inputs.received:
                return
            if self.server.remove_self_masks and survivors < self.agg.options.min_survivors:
                self.withheld = True  # distributed DP: the sum is never unmasked
                return
            try:
                requests = self.server.close_inputs()
            except SecAggError as exc:
                self._abandon(str(exc))
                return
            inputs.replies = {u: encode_request(r) for u, r in requests.items()}
            self._open(Phase.UNMASK, set(requests))
            inputs.closed.set()
            await self.steps[Phase.UNMASK].closed.wait()
            try:
                self.total = self._unmasked(self.server.finalize())
            except (SecAggError, ProtocolError) as exc:
                self._abandon(str(exc))
        finally:
            inputs.closed.set()
            for timer in self._timers:
                timer.cancel()

    @property
    def sealed(self) -> tuple[SealedShares, ...]:
        """Two-tier: the survivors' self-mask shares sealed to the center."""
        return self.server.sealed_shares

    def finalize(self, state: RingState) -> FloatVector:
        """The round's weighted mean (the simulator's decoding of the unmasked sum).

        Raises:
            SecAggError: the round was abandoned (the model stays unchanged).
        """
        idx = self.rnd.round_idx
        if self.withheld:
            return self.agg.withhold(idx, self.survivors())
        if self.abandoned is not None or self.total is None:
            self.agg.lost.add(idx)
            raise SecAggError(self.abandoned or f"round {idx}: the sum was not unmasked")
        return self.agg.decode_total(self.total, self.seed or 0, self.survivors())


def _own(claimed: int, party: int) -> None:
    if claimed != party:
        raise ProtocolError(f"message names party {claimed}; the sender is party {party}")
