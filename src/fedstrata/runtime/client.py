"""The client agent: trains when the center asks and submits its update.

:class:`ClientAgent` wraps a :class:`~fedstrata.core.Trainer`, the client's local data
and (optionally) the uplink :class:`~fedstrata.pipeline.Pipeline`. It talks to the
center through a :class:`CenterLink` — :class:`~fedstrata.runtime.wire.GrpcLink` in
deployment. Training runs in a worker thread so the event loop keeps serving the
session's keepalives.

Ownership and cancellation: :meth:`ClientAgent.run` owns the session for its whole
life and returns when the center says the run is over; cancelling it closes the
session, which the center treats as the client leaving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import CodecId, Payload
from fedstrata.core.training import ArrayDataset, Trainer
from fedstrata.errors import PayloadError, ProtocolError
from fedstrata.pipeline.dense import DenseCodec
from fedstrata.pipeline.stage import Pipeline
from fedstrata.runtime.center import TaskKind, TaskSpec

__all__ = ["CenterLink", "ClientAgent", "ClientReport", "decode_model"]

log = logging.getLogger(__name__)


class CenterLink(Protocol):
    """The transport seam: what a client agent needs from its connection."""

    def session(self) -> AsyncIterator[TaskSpec]: ...

    async def download(self, round_idx: int) -> Payload: ...

    async def submit(
        self, round_idx: int, payload: Payload, num_examples: int, metrics: Mapping[str, float]
    ) -> tuple[bool, str]: ...


@dataclass
class ClientReport:
    """What a client agent did: rounds trained, and the center's refusals."""

    rounds: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)


def decode_model(payload: Payload, size: int) -> FloatVector:
    """The float32 model carried by a broadcast payload.

    Raises:
        PayloadError: not a model payload, or of the wrong size.
    """
    if payload.codec != CodecId.MODEL_F32 or payload.params:
        raise PayloadError(f"expected a model payload, got codec {payload.codec.name}")
    if len(payload.body) != 4 * size:
        raise PayloadError(f"model payload has {len(payload.body)} bytes, expected {4 * size}")
    return np.frombuffer(payload.body, dtype="<f4").astype(np.float32)


class ClientAgent:
    """One federated client; see the module docstring.

    Args:
        link: the connection to the center (entered by the caller).
        client_id: this client's id (its data partition).
        trainer: local trainer.
        data: local training data.
        pipeline: uplink encode stages and codec (None: dense float32).
    """

    def __init__(
        self,
        link: CenterLink,
        client_id: int,
        trainer: Trainer,
        data: ArrayDataset,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.link, self.client_id, self.trainer, self.data = link, client_id, trainer, data
        self.pipeline = pipeline
        self._dense = DenseCodec(trainer.spec.size)

    async def run(self) -> ClientReport:
        """Serve the center until it ends the run.

        Raises:
            ProtocolError: the center refused the session.
            TransportError: the connection failed.
        """
        report = ClientReport()
        async for task in self.link.session():
            if task.kind is TaskKind.DONE:
                break
            await self._round(task, report)
        return report

    async def _round(self, task: TaskSpec, report: ClientReport) -> None:
        try:
            params = decode_model(await self.link.download(task.round_idx), self.trainer.spec.size)
        except (ProtocolError, PayloadError) as exc:
            log.warning("client %d: round %d skipped: %s", self.client_id, task.round_idx, exc)
            report.refused.append((task.round_idx, str(exc)))
            return
        payload, n, metrics = await asyncio.to_thread(self._train, task, params)
        accepted, reason = await self.link.submit(task.round_idx, payload, n, metrics)
        report.rounds.append(task.round_idx)
        if not accepted:
            log.warning("client %d: round %d refused: %s", self.client_id, task.round_idx, reason)
            report.refused.append((task.round_idx, reason))

    def _train(self, task: TaskSpec, params: FloatVector) -> tuple[Payload, int, dict[str, float]]:
        """Local training and encoding (runs in a worker thread)."""
        if task.plan is None:
            raise ProtocolError(f"round {task.round_idx}: the center sent no training plan")
        ctx = RoundContext(task.round_idx, task.root_seed).for_client(self.client_id)
        out = np.empty_like(params)
        result = self.trainer.train(params, self.data, task.plan, ctx, out)
        codec_input = np.array(out, copy=True)
        if self.pipeline is not None:
            payload = self.pipeline.encode(codec_input, ctx)
        else:
            payload = self._dense.encode(codec_input, ctx)
        return payload, result.num_examples, dict(result.metrics)
