"""The parties' halves of the runtime's federated evaluation (:mod:`fedstrata.runtime.fedeval`).

* the wire: ``EvalReport`` bytes (:func:`report_bytes`, :func:`report_entries`) and the
  server's routing of an evaluation download or submission to the center's desk
  (:func:`eval_download`, :func:`eval_submit`);
* a client agent's answer to an ``EVALUATE`` task (:func:`answer_evaluation`): it
  downloads the round's dense model, evaluates it on its held-out data in a worker
  thread (:func:`fedstrata.coordinator.fedeval.client_evaluation`, the simulator's
  rule) and reports its examples and metrics, or why it failed;
* an aggregator tier's relay (:func:`relay_evaluation`): the parent's model goes to the
  asked clients it serves, their results up in one report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from fedstrata.coordinator.fedeval import client_evaluation
from fedstrata.core.payload import Payload
from fedstrata.errors import DataError, PayloadError, ProtocolError, TransportError
from fedstrata.runtime.client_link import decode_model
from fedstrata.runtime.fedeval import EvalDesk, EvalEntry
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.records import TaskSpec, UploadHeader
from fedstrata.runtime.streaming import Broadcast
from fedstrata.runtime.transport import Reassembler

if TYPE_CHECKING:
    from fedstrata.runtime.center import Center
    from fedstrata.runtime.client import ClientAgent

__all__ = [
    "EvalLink",
    "answer_evaluation",
    "eval_download",
    "eval_submit",
    "relay_evaluation",
    "report_bytes",
    "report_entries",
]

log = logging.getLogger(__name__)


class EvalLink(Protocol):
    """What a party needs of its link to answer an ``EVALUATE`` task."""

    async def download_eval(self, round_idx: int) -> Payload: ...

    async def submit_eval(self, round_idx: int, report: bytes) -> tuple[bool, str]: ...


def report_bytes(entries: list[EvalEntry]) -> bytes:
    """The ``EvalReport`` of ``entries``."""
    report = pb.EvalReport(
        results=[
            pb.EvalResult(
                client_id=e.client_id,
                num_examples=e.num_examples,
                metrics=e.metrics,
                error=e.error,
            )
            for e in entries
        ]
    )
    data: bytes = report.SerializeToString()
    return data


def report_entries(data: bytes) -> list[EvalEntry]:
    """The entries of an ``EvalReport``.

    Raises:
        PayloadError: not an ``EvalReport``.
    """
    try:
        report = pb.EvalReport.FromString(data)
    except Exception as exc:  # protobuf's DecodeError
        raise PayloadError(f"malformed EvalReport: {exc}") from None
    return [
        EvalEntry(int(r.client_id), int(r.num_examples), dict(r.metrics), r.error)
        for r in report.results
    ]


def _desk(center: Center) -> EvalDesk:
    desk = center.evaluation
    if desk is None:
        raise ProtocolError("this run has no federated evaluation (evaluation.every: 0)")
    return desk


def eval_download(
    center: Center, client_id: int, request: pb.DownloadRequest
) -> tuple[int, AsyncIterator[bytes]]:
    """Serve an evaluation download. Raises: ProtocolError: refused."""
    return _desk(center).download(client_id, request.round_idx, request.run_id)


async def eval_submit(
    center: Center, header: UploadHeader, chunks: AsyncIterator[bytes], limit: int
) -> tuple[bool, str]:
    """Take an evaluation report; returns (accepted, reason). Never raises for bad input."""
    try:
        desk = _desk(center)
    except ProtocolError as exc:
        return False, str(exc)
    try:
        entries: list[EvalEntry] = []
        if header.total_bytes > 0:  # an empty report: a tier none of whose clients was asked
            data = Reassembler(header.total_bytes, limit)
            async for chunk in chunks:
                data.add(chunk)
            entries = report_entries(data.data())
    except PayloadError as exc:  # a broken report answers for nobody: no waiting on it
        return desk.refuse(header.client_id, header.round_idx, header.run_id, str(exc))
    return desk.submit(header.client_id, header.round_idx, header.run_id, entries)


async def answer_evaluation(agent: ClientAgent, task: TaskSpec) -> None:
    """A client agent's answer to ``task`` (``EVALUATE``); a failure is reported, not
    raised (except a broken connection: TransportError)."""
    link = agent.link
    cid, r = agent.client_id, task.round_idx
    try:
        if agent.eval_data is None:
            raise DataError("this client has no evaluation data")
        params = decode_model(await link.download_eval(r), agent.trainer.spec.size)
        n, metrics = await asyncio.to_thread(
            client_evaluation, agent.trainer, params, agent.eval_data
        )
        entry = EvalEntry(cid, n, metrics)
    except TransportError:
        raise
    except Exception as exc:  # the task's code may raise anything: reported, as in the sim
        log.warning("client %d: federated evaluation of round %d failed: %s", cid, r, exc)
        entry = EvalEntry(cid, error=f"{type(exc).__name__}: {exc}")
    accepted, reason = await link.submit_eval(r, report_bytes([entry]))
    if not accepted:
        log.warning("client %d: evaluation report of round %d refused: %s", cid, r, reason)


async def relay_evaluation(parent: EvalLink, center: Center, task: TaskSpec) -> None:
    """An aggregator tier's relay of ``task``: its asked clients' results go up.

    Raises:
        TransportError: the connection to the parent failed.
    """
    r = task.round_idx
    desk = center.evaluation
    try:
        if desk is None:
            raise ProtocolError("this tier was built without federated evaluation")
        model = (await parent.download_eval(r)).to_bytes()
    except (ProtocolError, PayloadError) as exc:
        log.warning("tier: federated evaluation of round %d not relayed: %s", r, exc)
        served = [] if desk is None else desk.served(task.eval_clients)
        why = f"its tier could not relay the evaluation: {exc}"
        await parent.submit_eval(r, report_bytes([EvalEntry(c, error=why) for c in served]))
        return
    results, failures = await desk.ask(
        r, Broadcast.of_bytes(model), task.eval_clients, task.run_id, served_only=True
    )
    entries = [EvalEntry(c, e.num_examples, dict(e.metrics)) for c, e in results.items()]
    entries += [EvalEntry(c, error=why) for c, why in failures.items()]
    accepted, reason = await parent.submit_eval(r, report_bytes(entries))
    if not accepted:
        log.warning("tier: evaluation report of round %d refused: %s", r, reason)
