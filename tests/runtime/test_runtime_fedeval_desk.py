"""The center's evaluation desk (``runtime.fedeval``) without gRPC: who is asked, which
answers count, and the ``EvalReport`` codec (``runtime.fedeval_parts``)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fedstrata.errors import PayloadError, ProtocolError
from fedstrata.runtime.fedeval import EvalDesk, EvalEntry
from fedstrata.runtime.fedeval_parts import report_bytes, report_entries
from fedstrata.runtime.records import TaskKind, TaskSpec
from fedstrata.runtime.streaming import Broadcast
from fedstrata.runtime.transport import ChunkPlan


class _Settings:
    chunks = ChunkPlan(1 << 10)


class _Center:
    """The desk's view of a center: sessions it pushes tasks onto."""

    def __init__(self) -> None:
        self.settings = _Settings()
        self.queues: dict[int, list[TaskSpec]] = {}

    def push(self, cid: int, task: TaskSpec) -> bool:
        if cid not in self.queues:
            return False
        self.queues[cid].append(task)
        return True


def _desk(sessions: dict[int, bool], timeout_s: float | None = 5.0) -> tuple[EvalDesk, _Center]:
    center = _Center()
    desk = EvalDesk(center, None, timeout_s)  # type: ignore[arg-type]
    for sid, tier in sessions.items():
        center.queues[sid] = []
        desk.joined(sid, tier=tier)
    return desk, center


MODEL = Broadcast.of_model(np.arange(4, dtype=np.float32))


def test_the_report_codec_round_trips_and_refuses_garbage():
    entries = [EvalEntry(3, 7, {"loss": 0.25}), EvalEntry(9, error="boom")]
    assert report_entries(report_bytes(entries)) == entries
    with pytest.raises(PayloadError, match="EvalReport"):
        report_entries(b"\xff\xff\xff")


def test_direct_clients_answer_for_themselves_and_the_absent_fail():
    async def main():
        desk, center = _desk({1: False, 2: False, 5: False})
        asking = asyncio.ensure_future(desk.ask(4, MODEL, [1, 2, 3], "run"))
        await asyncio.sleep(0)
        assert [t.kind for t in center.queues[1]] == [TaskKind.EVALUATE]
        assert center.queues[5] == []  # not sampled: not asked
        total, _ = desk.download(1, 4, "run")
        assert total == MODEL.nbytes
        with pytest.raises(ProtocolError, match="not asked"):
            desk.download(5, 4, "run")
        assert desk.submit(1, 3, "run", [EvalEntry(1, 2, {"a": 1.0})])[0] is False  # stale
        assert desk.submit(2, 4, "run", [EvalEntry(1, 2, {"a": 1.0})])[0] is False  # not its own
        assert desk.submit(1, 4, "run", [EvalEntry(1, 2, {"a": 1.0})]) == (True, "")
        assert desk.submit(1, 4, "run", [EvalEntry(1, 2, {"a": 1.0})])[0] is False  # twice
        return await asking

    results, failures = asyncio.run(main())
    assert list(results) == [1]
    assert failures[2] == "its report is not its own result"
    assert "not connected" in failures[3]


def test_a_tier_reports_for_the_clients_it_serves_and_leaving_fails_nobody_twice():
    async def main():
        desk, center = _desk({10: True, 11: True})
        asking = asyncio.ensure_future(desk.ask(0, MODEL, [0, 1, 2], "run"))
        await asyncio.sleep(0)
        assert center.queues[10][0].eval_clients == (0, 1, 2)
        report = [EvalEntry(0, 3, {"a": 0.5}), EvalEntry(1, error="oom"), EvalEntry(8, 1, {})]
        assert desk.submit(10, 0, "run", report) == (True, "")
        desk.gone(11)  # the other tier left: its clients stay unreported
        return await asking

    results, failures = asyncio.run(main())
    assert list(results) == [0]  # client 8 was not asked: ignored
    assert failures == {1: "oom", 2: "not connected (no session reaches it)"}


def test_a_tier_leaves_clients_it_does_not_serve_to_other_tiers():
    async def answer_later():
        desk, _ = _desk({0: False}, timeout_s=0.05)
        return await desk.ask(0, MODEL, [0, 4], "run", served_only=True)

    results, failures = asyncio.run(answer_later())
    assert results == {}
    assert failures == {0: "no result by the evaluation's deadline"}


def test_an_unreadable_report_fails_its_client_and_nobody_waits_on_it():
    async def main():
        desk, _ = _desk({1: False, 10: True})
        asking = asyncio.ensure_future(desk.ask(2, MODEL, [1, 3], "run"))
        await asyncio.sleep(0)
        assert desk.refuse(1, 2, "run", "truncated")[0] is False
        assert desk.refuse(10, 2, "run", "truncated")[0] is False
        return await asking  # returns at once: no answer is awaited any more

    results, failures = asyncio.run(asyncio.wait_for(main(), 2.0))
    assert results == {}
    assert failures == {
        1: "unreadable report: truncated",
        3: "not connected (no session reaches it)",
    }
