"""A :class:`~fedstrata.runtime.center.Center`'s transport entry points (no gRPC here).

Transports call three entry points of a center with already-authenticated client
ids; this module holds what each does, and :class:`~fedstrata.runtime.center.Center`'s
methods of the same purpose call it: :func:`serve_session` (a client's lifetime: it
claims the client's place, supersedes an older session of the same client, yields its
tasks, and on its end fails the client in the open round), :func:`serve_download`
(the open round's model, or under downlink compression the message that brings the
client up to date) and :func:`receive_upload` (an update or a tier's partial, checked
against the open round and handed to its :class:`~fedstrata.runtime.intake.RoundIntake`;
never raises for bad input). ``wire.py`` serves them over gRPC; tests may call them
directly (the in-memory side of the transport seam). A
:class:`~fedstrata.runtime.fedbuff.BufferedCenter` has its own download and upload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from fedstrata.errors import ProtocolError, RunEndedError
from fedstrata.runtime.downlink import DownlinkAsk, kind_mismatch, serve_model
from fedstrata.runtime.records import TaskKind, TaskSpec, UploadHeader, submission_problem
from fedstrata.runtime.sched_reports import DeviceReport

if TYPE_CHECKING:
    from fedstrata.runtime.center import Center

__all__ = ["receive_upload", "serve_download", "serve_session"]

log = logging.getLogger(__name__)

_SUPERSEDED = TaskSpec(TaskKind.DONE)  # ends a session replaced by a reconnection


async def serve_session(
    center: Center,
    client_id: int,
    *,
    run_id: str = "",
    live_clients: int = 0,
    profile: DeviceReport | None = None,
    node: str = "",
    profiles: Mapping[int, DeviceReport] | None = None,
) -> AsyncIterator[TaskSpec]:
    """A client's session: yields its tasks until ``DONE``; ends fail it.

    A new session of a client that still holds one (it reconnected before the
    center saw the old connection break) supersedes the old one, which ends.
    ``run_id``: the run the client last took part in (logged when it differs);
    ``live_clients``: the clients a tier reaches (0: a client, which reaches one);
    ``profile``: its device, for the scheduler; ``node``: a tier's node of the
    tree ("": none); ``profiles``: an explicit tree's edge forwards its clients'
    (for :attr:`Center.tree_sched`).

    Raises:
        RunEndedError: the run is over.
        NodeClaimedError: another live tier serves ``node``.
    """
    if center._finished:
        raise RunEndedError(center._reject(-1, client_id, "the run is over"))
    center.claims.claim(node, client_id)
    old = center._sessions.get(client_id)
    if old is not None:
        log.warning("client %d reconnected; its previous session ends", client_id)
        old.put_nowait(_SUPERSEDED)
    if run_id and run_id != center.run_id:
        log.info("client %d comes from run %s; this is run %s", client_id, run_id, center.run_id)
    center._joined(client_id, profile)
    if center.tree_sched is not None and profiles:
        center.tree_sched.join(client_id, profiles)
    queue: asyncio.Queue[TaskSpec] = asyncio.Queue()
    center._sessions[client_id] = queue
    center.roster.join(client_id, live_clients if live_clients > 0 else 1)
    if center.evaluation is not None:
        center.evaluation.joined(client_id, tier=live_clients > 0)
    log.info(
        "client %d connected (%d connected, %d clients reachable)",
        client_id, len(center._sessions), center.roster.reachable,
    )  # fmt: skip
    try:
        while True:
            task = await queue.get()
            if task is _SUPERSEDED:
                return
            yield task
            if task.kind is TaskKind.DONE:
                return
    finally:
        if center._sessions.get(client_id) is queue:
            del center._sessions[client_id]
            center.roster.leave(client_id)
            center.claims.release(node, client_id)
        center._left(client_id)


def serve_download(
    center: Center,
    client_id: int,
    round_idx: int,
    run_id: str = "",
    ask: DownlinkAsk | None = None,
) -> tuple[int, AsyncIterator[bytes]]:
    """The open round's model for a selected client: (total bytes, chunks); under
    downlink compression (``ask``) the message that brings it up to date.

    Raises:
        ProtocolError: another run, no such open round, the client was not
            selected, or it asked for the other kind of download than the run's.
    """
    rnd = None if center._intake is None else center._intake.rnd
    if run_id != center.run_id:
        why = f"download for run {run_id or '(none)'}; this is run {center.run_id}"
        raise ProtocolError(center._reject(round_idx, client_id, why))
    if rnd is None or rnd.round_idx != round_idx or client_id not in rnd.members:
        raise ProtocolError(
            center._reject(round_idx, client_id, f"no model of round {round_idx} for it")
        )
    mismatch = kind_mismatch(ask, center.downlink)
    if mismatch is not None:  # a client of another configuration
        if center._intake is not None:
            center._intake.fail(client_id, mismatch)
        raise ProtocolError(center._reject(round_idx, client_id, mismatch))
    total, chunks = serve_model(rnd.model, center.downlink, ask, center.settings.chunks)
    rnd.bytes_down += total
    return total, chunks


async def receive_upload(
    center: Center, header: UploadHeader, chunks: AsyncIterator[bytes]
) -> tuple[bool, str]:
    """Receive one update; returns (accepted, reason). Never raises for bad input."""
    cid, intake = header.client_id, center._intake
    if header.partial and header.run_id in (center.run_id, ""):  # "": no task seen yet
        center.roster.report(cid, header.live_clients)
        if header.total_bytes == 0:  # a tier's report of its clients, no partial
            _tree_reports(center, cid, header)  # under secure aggregation (tier_sched.py)
            return True, ""
    rnd = None if intake is None else intake.rnd
    mergeable = bool(getattr(center.aggregator, "mergeable", False))
    problem = submission_problem(rnd, header, center.run_id, mergeable=mergeable)
    if problem is not None or intake is None:
        return False, center._reject(header.round_idx, cid, problem or "no round is open")
    start = center.clock.now()
    accepted, why = await intake.submit(header, chunks)
    if accepted and header.partial:
        _tree_reports(center, cid, header)
    if center.scheduler is not None:
        up_s = center.clock.now() - start
        center.scheduler.arrived(cid, header.timings, up_s, header.metrics, header.round_idx)
    if accepted and center.ack_gate is not None:  # replied once the round is committed
        return await center.ack_gate.wait(header.round_idx)
    return accepted, why


def _tree_reports(center: Center, cid: int, header: UploadHeader) -> None:
    """A scheduled tree's tier reported its members and its clients' devices."""
    if center.tree_sched is not None:
        center.tree_sched.reported(header.round_idx, header.reports)
        center.tree_sched.join(cid, dict(header.profiles))
