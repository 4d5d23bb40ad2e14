"""Secure aggregation at a runtime client agent: the client half of each round.

:class:`SecureClient` drives the existing sans-IO client state machine
(:class:`~fedstrata.secagg.ClientProtocol`) over the agent's link. Key agreement runs
while the client trains (:meth:`SecureClient.prepare`: ``SETUP``, ``KEYS``,
``SHARES``); then :meth:`SecureClient.submit` turns the ring payload the pipeline
encoded (:class:`~fedstrata.secagg.RingCodec`, exactly as in the simulator) into the
protocol input ``[w q, w]`` (the simulator's integer weight,
:func:`~fedstrata.secagg.ring_input.integer_weight`), masks it, sends it (``INPUT``)
and answers the unmasking request (``UNMASK``). The plaintext update never leaves the
client. In a deployment the protocol draws its secrets from the OS CSPRNG. No gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fedstrata.coordinator.round_logic import Weighting, client_weight
from fedstrata.core.payload import Payload
from fedstrata.errors import FedstrataError, ProtocolError, TransportError
from fedstrata.runtime.sched_reports import RoundTimings
from fedstrata.runtime.secagg_failover import InputLedger
from fedstrata.runtime.secagg_wire import (
    Phase,
    SetupReply,
    decode_bundle,
    decode_directory,
    decode_request,
    decode_setup,
    encode_keys,
    encode_masked,
    encode_response,
    encode_shares,
)
from fedstrata.secagg import ClientProtocol, SecAggAggregator
from fedstrata.secagg.prg import U32Vector
from fedstrata.secagg.ring_input import integer_weight, weighted_input

__all__ = ["Prepared", "SecAggLink", "SecureClient"]

log = logging.getLogger(__name__)


class SecAggLink(Protocol):
    """What the client half needs of its connection (``GrpcLink`` has it)."""

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
    ) -> tuple[bool, str, bytes]: ...


@dataclass(eq=False)
class Prepared:
    protocol: ClientProtocol | None
    why: str = ""


class SecureClient:
    """One client's protocol rounds; see the module docstring.

    Args:
        link: the agent's connection (its ``secagg_step``).
        aggregator: the configuration's secure aggregator (protocol parameters, ring
            codec, weight rules), built by every party from the same config.
        weighting: the run's weighting (``uniform`` under DP, else ``examples``).
        seals: seal the self-mask shares to the key of the setup (a device under an
            edge); False for an edge, whose outer shares go to the center in the clear
            (the center's key in its setup is for its devices).
    """

    def __init__(
        self,
        link: SecAggLink,
        aggregator: SecAggAggregator,
        weighting: Weighting,
        *,
        seals: bool = True,
    ) -> None:
        self.link, self.agg, self.weighting, self.seals = link, aggregator, weighting, seals
        self.sent: list[tuple[int, bytes]] = []  # (phase, bytes) sent: the client's record
        self.inputs = InputLedger()  # rounds whose input went out, across center terms

    async def step(self, round_idx: int, phase: Phase, data: bytes, **kw: Any) -> bytes:
        """Send one step; the center's answer.

        Raises:
            ProtocolError: the center refused the step.
            TransportError: the connection failed.
        """
        self.sent.append((int(phase), data))
        ok, why, answer = await self.link.secagg_step(round_idx, int(phase), data, **kw)
        if not ok:
            raise ProtocolError(f"round {round_idx}: {phase.name} step refused: {why}")
        return answer

    async def setup(self, round_idx: int) -> SetupReply:
        """Step 0: the round's public parameters (and, two-tier, the key to seal to).

        Raises:
            ProtocolError: refused, or unsafe parameters.
            TransportError: the connection failed.
        """
        return decode_setup(await self.step(round_idx, Phase.SETUP, b""))

    async def agree(self, round_idx: int, setup: SetupReply | None = None) -> Prepared:
        """Key agreement of ``round_idx`` (run while training); a failure is kept, not
        raised, so that the training's outcome decides what the agent reports."""
        try:
            setup = setup or await self.setup(round_idx)
            mine = self.agg.config
            config = setup.config(mine.vector_length, mine.modulus_bits)
            sealed_to = (setup.center_public or None) if self.seals else None
            protocol = ClientProtocol(config, setup.party_id, center_public=sealed_to)
            keys = protocol.on_setup(setup.setup)
            answer = await self.step(round_idx, Phase.KEYS, encode_keys(keys))
            shares = await asyncio.to_thread(protocol.on_key_directory, decode_directory(answer))
            answer = await self.step(round_idx, Phase.SHARES, encode_shares(shares))
            await asyncio.to_thread(protocol.on_share_bundle, decode_bundle(answer))
        except FedstrataError as exc:
            return Prepared(None, str(exc))
        return Prepared(protocol)

    async def prepare(self, round_idx: int) -> Prepared:
        """:meth:`setup` and :meth:`agree` (a client of a flat center or an edge)."""
        return await self.agree(round_idx)

    async def withdraw(self, round_idx: int) -> None:
        """Tell the center this party leaves the round (so that no step waits for it)."""
        with contextlib.suppress(FedstrataError):
            await self.step(round_idx, Phase.INPUT, b"")

    async def submit(
        self,
        prepared: Prepared,
        round_idx: int,
        payload: Payload,
        num_examples: int,
        metrics: Mapping[str, float],
        *,
        timings: RoundTimings | None = None,
        factor: float = 1.0,
    ) -> tuple[bool, str]:
        """Mask the update, send it and answer the unmasking; (accepted, reason).
        ``timings`` (the round as measured, under scheduling) go with the masked input.
        ``factor``: partial work's ``done / assigned`` (:mod:`~fedstrata.runtime.settle`),
        folded into the weight before it is rounded into the ring and masked, as the
        simulator folds it (``SettlementWeighted`` over the secure aggregator).

        Raises:
            TransportError: the connection failed.
        """
        protocol = prepared.protocol
        if protocol is None:
            await self.withdraw(round_idx)
            return False, f"key agreement failed: {prepared.why}"
        try:
            msg = self.agg.codec.decode_ring(payload)
            options = self.agg.options
            weight, capped = integer_weight(
                client_weight(num_examples, self.weighting) * factor, options.max_weight,
                protocol.client_id, rounding=options.round_weights, scale=options.weight_scale,
            )  # fmt: skip
            if capped:
                log.warning("round %d: weight capped at %d", round_idx, options.max_weight)
            vector = weighted_input(msg.values, weight, self.agg.codec.spec.modulus_bits)
        except FedstrataError as exc:
            await self.withdraw(round_idx)
            return False, str(exc)
        return await self.send_input(
            prepared, round_idx, vector, msg.seed, metrics, timings=timings,
            num_examples=num_examples,
        )  # fmt: skip

    async def send_input(
        self,
        prepared: Prepared,
        round_idx: int,
        vector: U32Vector,
        support_seed: int,
        metrics: Mapping[str, float],
        *,
        timings: RoundTimings | None = None,
        num_examples: int = 0,
    ) -> tuple[bool, str]:
        """Mask ``vector`` (the protocol input), send it and answer the unmasking.
        ``num_examples`` travels in the clear with the metrics, which the center
        averages weighted as the simulator does (0: an edge's cluster sum).

        Raises:
            TransportError: the connection failed.
        """
        protocol = prepared.protocol
        if protocol is None:
            await self.withdraw(round_idx)
            return False, f"key agreement failed: {prepared.why}"
        try:
            masked = await asyncio.to_thread(protocol.masked_input, vector)
            answer = await self.step(
                round_idx, Phase.INPUT, encode_masked(masked),
                metrics=metrics, support_seed=support_seed, timings=timings,
                num_examples=num_examples,
            )  # fmt: skip
            response = protocol.on_unmask_request(decode_request(answer))
            await self.step(round_idx, Phase.UNMASK, encode_response(response))
        except TransportError:
            raise
        except FedstrataError as exc:
            return False, str(exc)
        return True, ""
