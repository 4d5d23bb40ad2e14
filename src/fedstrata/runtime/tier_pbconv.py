"""Protobuf conversions of :mod:`fedstrata.runtime.tier_work` (scheduling through an
explicit tree's edges; the ``TierProfile``, ``TierAssignment`` and ``TierMemberReport``
messages of ``proto/fedstrata.proto``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedstrata.errors import DataError, ProtocolError
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.sched_reports import DeviceReport
from fedstrata.runtime.tier_work import MemberReport, Status, TierWork

__all__ = [
    "profiles_from_pb",
    "put_profiles",
    "put_reports",
    "put_work",
    "reports_from_pb",
    "work_from_pb",
]

_STATUS: dict[Status, int] = {
    "accepted": pb.TierMemberReport.ACCEPTED,
    "late": pb.TierMemberReport.LATE,
    "failed": pb.TierMemberReport.FAILED,
}
_NAMES: dict[int, Status] = {v: k for k, v in _STATUS.items()}


def put_work(msg: pb.Task, work: TierWork | None) -> None:
    """Write ``work`` into a task (None: leave it unscheduled)."""
    if work is None:
        return
    msg.tier_scheduled = True
    for cid, steps in zip(work.members, work.steps, strict=True):
        msg.tier_work.add(client_id=cid, steps=steps)


def work_from_pb(msg: pb.Task) -> TierWork | None:
    """A task's scheduled cohort (None: none).

    Raises:
        ProtocolError: repeated members.
    """
    if not msg.tier_scheduled:
        return None
    try:
        return TierWork(
            tuple(a.client_id for a in msg.tier_work), tuple(a.steps for a in msg.tier_work)
        )
    except DataError as exc:
        raise ProtocolError(f"center sent a bad tree cohort: {exc}") from exc


def put_reports(header: pb.StreamHeader, reports: Sequence[MemberReport]) -> None:
    for r in reports:
        header.tier_reports.add(
            client_id=r.client_id, examples=r.examples, download_s=r.download_s,
            compute_s=r.compute_s, upload_s=r.upload_s, status=_STATUS[r.status],
            train_loss=r.train_loss or 0.0, has_loss=r.train_loss is not None,
            steps=r.steps or 0, has_steps=r.steps is not None, has_timings=r.timed,
        )  # fmt: skip


def reports_from_pb(h: pb.StreamHeader, cid: int) -> tuple[MemberReport, ...]:
    """An edge's member reports.

    Raises:
        ProtocolError: an unknown status or a negative or non-finite figure.
    """
    out = []
    for m in h.tier_reports:
        status = _NAMES.get(m.status)
        if status is None:
            raise ProtocolError(f"tier {cid}: member report of unknown status {m.status}")
        try:
            out.append(MemberReport(
                m.client_id, status, m.examples, m.download_s, m.compute_s, m.upload_s,
                m.train_loss if m.has_loss else None, m.steps if m.has_steps else None,
                m.has_timings,
            ))  # fmt: skip
        except DataError as exc:
            raise ProtocolError(f"tier {cid}: bad member report: {exc}") from exc
    return tuple(out)


def put_profiles(hello: pb.Hello | pb.StreamHeader, profiles: Mapping[int, DeviceReport]) -> None:
    from fedstrata.runtime.pbconv import profile_to_pb  # pbconv imports this module

    for cid in sorted(profiles):
        hello.tier_profiles.add(client_id=cid, profile=profile_to_pb(profiles[cid]))


def profiles_from_pb(hello: pb.Hello | pb.StreamHeader) -> dict[int, DeviceReport]:
    """The profiles an edge forwarded for its clients (in its ``Hello`` or partial).

    Raises:
        ProtocolError: a profile outside the registry's ranges.
    """
    from fedstrata.runtime.pbconv import profile_from_pb

    out: dict[int, DeviceReport] = {}
    for t in hello.tier_profiles:
        got = profile_from_pb(pb.Hello(client_id=t.client_id, profile=t.profile))
        if got is not None:
            out[t.client_id] = got
    return out
