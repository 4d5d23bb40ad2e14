"""Conversions between the runtime's records and its protobuf messages, and the
channel options both sides of a connection use (``proto/fedstrata.proto``)."""

from __future__ import annotations

from fedstrata.core.training import LocalPlan, OptimizerKind
from fedstrata.errors import ProtocolError
from fedstrata.runtime.center import TaskKind, TaskSpec, UploadHeader
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.transport import ChunkPlan

__all__ = [
    "SERVICE",
    "grpc_options",
    "plan_from_pb",
    "plan_to_pb",
    "task_from_pb",
    "task_to_pb",
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


def task_to_pb(task: TaskSpec) -> pb.Task:
    kind = pb.Task.TRAIN if task.kind is TaskKind.TRAIN else pb.Task.DONE
    return pb.Task(
        kind=kind,
        round_idx=task.round_idx,
        root_seed=task.root_seed,
        deadline_s=task.deadline_s or 0.0,
        plan=plan_to_pb(task.plan),
        model_bytes=task.model_bytes,
        run_id=task.run_id,
    )


def task_from_pb(msg: pb.Task) -> TaskSpec:
    if msg.kind == pb.Task.DONE:
        return TaskSpec(TaskKind.DONE)
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
    )


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
        h.secagg_phase,
        h.secagg_support_seed,
    )
