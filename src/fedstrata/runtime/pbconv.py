"""Conversions between the runtime's records and its protobuf messages, and the
channel options both sides of a connection use (``proto/fedstrata.proto``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fedstrata.core.training import LocalPlan, OptimizerKind
from fedstrata.errors import DataError, ProtocolError
from fedstrata.runtime.center import TaskKind, TaskSpec, UploadHeader
from fedstrata.runtime.downlink import DownlinkAsk
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.sched_reports import DeviceReport, PartialWork, RoundTimings
from fedstrata.runtime.tier_pbconv import (
    profiles_from_pb,
    put_work,
    reports_from_pb,
    work_from_pb,
)
from fedstrata.runtime.transport import ChunkPlan

log = logging.getLogger(__name__)

__all__ = [
    "SERVICE",
    "downlink_ask",
    "downlink_request",
    "grpc_options",
    "partial_header_pb",
    "plan_from_pb",
    "plan_to_pb",
    "profile_from_pb",
    "profile_to_pb",
    "task_from_pb",
    "task_to_pb",
    "timings_from_pb",
    "timings_to_pb",
    "update_header_pb",
    "upload_header",
]

SERVICE = "fedstrata.runtime.v1.Center"


def grpc_options(chunks: ChunkPlan, keepalive_s: float) -> list[tuple[str, int]]:
    limit = chunks.message_limit_bytes
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(keepalive_s * 500)),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def plan_to_pb(plan: LocalPlan | None) -> pb.Plan | None:
    if plan is None:
        return None
    return pb.Plan(
        batch_size=plan.batch_size,
        lr=plan.lr,
        epochs=plan.epochs or 0,
        steps=plan.steps or 0,
        optimizer=plan.optimizer.value,
        momentum=plan.momentum,
        weight_decay=plan.weight_decay,
        prox_mu=plan.prox_mu,
    )


def plan_from_pb(msg: pb.Plan) -> LocalPlan:
    return LocalPlan(
        batch_size=msg.batch_size,
        lr=msg.lr,
        epochs=msg.epochs or None,
        steps=msg.steps or None,
        optimizer=OptimizerKind(msg.optimizer),
        momentum=msg.momentum,
        weight_decay=msg.weight_decay,
        prox_mu=msg.prox_mu,
    )


_KINDS = {TaskKind.TRAIN: pb.Task.TRAIN, TaskKind.DONE: pb.Task.DONE}


def task_to_pb(task: TaskSpec) -> pb.Task:
    if task.kind is TaskKind.EVALUATE:
        return pb.Task(
            kind=pb.Task.EVALUATE, round_idx=task.round_idx, model_bytes=task.model_bytes,
            run_id=task.run_id, deadline_s=task.deadline_s or 0.0,
            eval_clients=list(task.eval_clients),
        )  # fmt: skip
    kind = _KINDS[task.kind]
    msg = pb.Task(
        kind=kind,
        round_idx=task.round_idx,
        root_seed=task.root_seed,
        deadline_s=task.deadline_s or 0.0,
        plan=plan_to_pb(task.plan),
        model_bytes=task.model_bytes,
        run_id=task.run_id,
        partial_work=task.partial is not None,
        min_fraction=0.0 if task.partial is None else task.partial.min_fraction,
        partial_weighted=task.partial is not None and task.partial.weighted,
    )
    put_work(msg, task.work)
    return msg


def task_from_pb(msg: pb.Task) -> TaskSpec:
    if msg.kind == pb.Task.DONE:
        return TaskSpec(TaskKind.DONE)
    if msg.kind == pb.Task.EVALUATE:
        return TaskSpec(
            TaskKind.EVALUATE, msg.round_idx, deadline_s=msg.deadline_s or None,
            model_bytes=msg.model_bytes, run_id=msg.run_id,
            eval_clients=tuple(int(c) for c in msg.eval_clients),
        )  # fmt: skip
    if msg.kind != pb.Task.TRAIN:
        raise ProtocolError(f"center sent a task of unknown kind {msg.kind}")
    return TaskSpec(
        TaskKind.TRAIN,
        msg.round_idx,
        msg.root_seed,
        plan_from_pb(msg.plan),
        msg.deadline_s or None,
        msg.model_bytes,
        msg.run_id,
        _partial_from_pb(msg),
        work_from_pb(msg),
    )


def _partial_from_pb(msg: pb.Task) -> PartialWork | None:
    """A task's partial-work terms (None: run the whole plan).

    Raises:
        ProtocolError: a ``min_fraction`` outside [0, 1].
    """
    if not msg.partial_work:
        return None
    try:
        return PartialWork(msg.min_fraction, msg.partial_weighted)
    except DataError as exc:
        raise ProtocolError(f"center sent bad partial-work terms: {exc}") from exc


def upload_header(h: pb.StreamHeader, cid: int) -> UploadHeader:
    partial = h.content == pb.StreamHeader.PARTIAL
    return UploadHeader(
        cid,
        h.round_idx,
        h.total_bytes,
        h.num_examples,
        dict(h.metrics),
        partial,
        h.run_id,
        h.live_clients,
        timings_from_pb(h, cid),
        h.secagg_phase,
        h.secagg_support_seed,
        reports_from_pb(h, cid),
        tuple(sorted(profiles_from_pb(h).items())),
        h.evaluation,
    )


def downlink_ask(request: pb.DownloadRequest) -> DownlinkAsk | None:
    """A download's downlink request (None: the dense model)."""
    if not request.downlink:
        return None
    version = request.downlink_version
    return DownlinkAsk(None if version < 0 else version)


def downlink_request(
    client_id: int, round_idx: int, run_id: str, ask: DownlinkAsk | None
) -> pb.DownloadRequest:
    """The request of a download (dense when ``ask`` is None)."""
    request = pb.DownloadRequest(client_id=client_id, round_idx=round_idx, run_id=run_id)
    if ask is not None:
        request.downlink = True
        request.downlink_version = -1 if ask.version is None else ask.version
    return request


def profile_to_pb(report: DeviceReport) -> pb.ProfileReport:
    return pb.ProfileReport(
        cpu_score=report.cpu_score,
        memory_gb=report.memory_gb,
        network_latency_ms=report.network_latency_ms,
        uplink_mbps=report.uplink_mbps,
        downlink_mbps=report.downlink_mbps,
        bf16_speedup=report.bf16_speedup,
        fp16_speedup=report.fp16_speedup,
        local_examples=report.local_examples,
    )


def profile_from_pb(hello: pb.Hello) -> DeviceReport | None:
    """The device profile of a ``Hello`` (None: it sent none).

    Raises:
        ProtocolError: a profile outside the registry's ranges.
    """
    if not hello.HasField("profile"):
        return None
    p = hello.profile
    try:
        return DeviceReport(
            p.cpu_score, p.memory_gb, p.network_latency_ms, p.uplink_mbps, p.downlink_mbps,
            p.bf16_speedup, p.fp16_speedup, p.local_examples,
        )  # fmt: skip
    except DataError as exc:
        raise ProtocolError(f"client {hello.client_id}: bad device profile: {exc}") from exc


def timings_to_pb(timings: RoundTimings) -> pb.SchedTimings:
    return pb.SchedTimings(
        download_s=timings.download_s, compute_s=timings.compute_s, examples=timings.examples,
        steps=timings.steps or 0, has_steps=timings.steps is not None,
    )  # fmt: skip


def timings_from_pb(h: pb.StreamHeader, cid: int) -> RoundTimings | None:
    """A submission's measured timings (None: none, or unusable ones, logged)."""
    if not h.HasField("timings"):
        return None
    t = h.timings
    try:
        return RoundTimings(
            t.download_s, t.compute_s, t.examples, t.steps if t.has_steps else None
        )
    except DataError as exc:
        log.warning("client %d: timings ignored: %s", cid, exc)
        return None


def update_header_pb(
    client_id: int,
    round_idx: int,
    run_id: str,
    *,
    num_examples: int = 0,
    metrics: Mapping[str, float] | None = None,
    timings: RoundTimings | None = None,
) -> pb.StreamHeader:
    """The header of an ``UPDATE`` upload (an update or a secure-aggregation step);
    ``timings``: the round as the client measured it (for the center's scheduler)."""
    header = pb.StreamHeader(
        client_id=client_id, round_idx=round_idx, num_examples=num_examples,
        metrics=dict(metrics or {}), run_id=run_id,
    )  # fmt: skip
    if timings is not None:
        header.timings.CopyFrom(timings_to_pb(timings))
    return header


def partial_header_pb(
    client_id: int, round_idx: int, run_id: str, live_clients: int
) -> pb.StreamHeader:
    """The header of an aggregator tier's ``PARTIAL`` upload (round -1 and no data:
    a report of its ``live_clients`` alone)."""
    return pb.StreamHeader(
        client_id=client_id, round_idx=round_idx, content=pb.StreamHeader.PARTIAL,
        run_id=run_id, live_clients=live_clients,
    )  # fmt: skip
