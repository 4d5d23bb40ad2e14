"""Issue 11: uploads bound to their run and round; clients follow the run identity."""

import asyncio

import numpy as np
import pytest
from rthelpers import SMALL

from fedstrata.config import load_config
from fedstrata.core.context import RoundContext
from fedstrata.core.payload import Payload
from fedstrata.errors import ProtocolError
from fedstrata.pipeline.dense import DenseCodec
from fedstrata.runtime import TaskKind, TaskSpec, UploadHeader, deployment
from fedstrata.runtime.streaming import Broadcast

LIMIT_S = 60.0


def _two_clients(*extra):
    overrides = [*SMALL, "data.num_clients=2", "rounds.clients_per_round=null", *extra]
    return deployment(load_config(overrides=overrides))


def _update(dep, round_idx, cid) -> bytes:
    ctx = RoundContext(round_idx, dep.config.seed).for_client(cid)
    return DenseCodec(dep.size).encode(np.zeros(dep.size, np.float32), ctx).to_bytes()


async def _chunks(data, release=None):
    if release is not None:
        await release.wait()
    yield data


def test_upload_completing_after_its_round_closed_is_refused_as_late():
    """Issue 11 defect 4: a slow upload that crosses the round deadline is refused as
    late, and the client's real update for the next round is accepted."""
    dep = _two_clients("rounds.deadline_s=1.0")
    center = dep.center()

    async def main():
        queues = {cid: asyncio.Queue() for cid in (0, 1)}

        async def session(cid):
            async for task in center.session(cid):
                queues[cid].put_nowait(task)

        def header(cid, round_idx, data):
            return UploadHeader(cid, round_idx, len(data), 10, run_id=center.run_id)

        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(center.run(dep.initial_params()))
            for cid in queues:
                tg.create_task(session(cid))
            assert (await queues[0].get()).round_idx == 0
            release, slow = asyncio.Event(), _update(dep, 0, 0)
            late = tg.create_task(center.submit(header(0, 0, slow), _chunks(slow, release)))
            assert (await queues[0].get()).round_idx == 1  # round 0 closed at its deadline
            release.set()
            late_reply = await late
            replies = []
            for cid in (0, 1):
                data = _update(dep, 1, cid)
                replies.append(await center.submit(header(cid, 1, data), _chunks(data)))
        return run.result(), late_reply, replies

    result, late_reply, replies = asyncio.run(asyncio.wait_for(main(), LIMIT_S))
    assert late_reply == (False, "late: round 0 closed before the upload completed")
    assert replies == [(True, ""), (True, "")]
    first, second = result.rounds
    assert first.outcome.accepted == ()
    assert sorted(second.outcome.accepted) == [0, 1]


def test_center_refuses_calls_of_another_run():
    """Issue 11 defect 8: a download or upload naming another run is refused."""
    dep = _two_clients()
    center = dep.center()
    data = _update(dep, 0, 0)

    async def main():
        with pytest.raises(ProtocolError, match=f"this is run {center.run_id}"):
            center.download(0, 0, "an-old-run")
        header = UploadHeader(0, 0, len(data), 10, run_id="an-old-run")
        return await center.submit(header, _chunks(data))

    accepted, reason = asyncio.run(main())
    assert not accepted
    assert reason == f"submission for run an-old-run; this is run {center.run_id}"


class _ScriptedCenter:
    """A center link that sends a fixed list of tasks and records the uploads."""

    def __init__(self, model: Payload, tasks):
        self.model, self.tasks, self.sent = model, tasks, []

    async def session(self):
        for task in self.tasks:
            yield task

    async def download(self, round_idx):
        return self.model

    async def submit(self, round_idx, payload, num_examples, metrics):
        self.sent.append((round_idx, payload.to_bytes()))
        return True, ""

    async def reconnect(self):  # pragma: no cover - the script never breaks
        pass


def test_client_resets_per_run_state_on_a_new_run_and_refuses_rounds_going_back():
    """Issue 11 defect 8: a restarted center (new run id) gets the update a fresh
    client would send (error-feedback residuals dropped); a round going backwards
    within one run is refused."""
    dep = _two_clients("compression.preset=topk1_int8_ef")
    params = dep.initial_params()
    model = Payload.from_bytes(b"".join(Broadcast.of_model(params).chunks(1 << 20)))
    plan = dep.center().settings.plan

    def train(round_idx, run_id):
        return TaskSpec(TaskKind.TRAIN, round_idx, dep.config.seed, plan, None, 0, run_id)

    script = [train(0, "a"), train(1, "a"), train(0, "b"), train(1, "b"), train(0, "b")]
    link = _ScriptedCenter(model, [*script, TaskSpec(TaskKind.DONE)])
    report = asyncio.run(dep.client(link, 0).run())
    fresh = _ScriptedCenter(model, [train(0, "c"), train(1, "c"), TaskSpec(TaskKind.DONE)])
    asyncio.run(dep.client(fresh, 0).run())

    assert [r for r, _ in link.sent] == [0, 1, 0, 1]
    assert link.sent[2:] == fresh.sent  # run b trains exactly like a fresh client
    assert link.sent[:2] == fresh.sent
    assert report.refused == [(0, "round 0 does not follow round 1 of run b")]
