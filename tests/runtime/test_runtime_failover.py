"""The center's snapshot and its durable acknowledgements."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.algorithms.server import AdaptiveState
from fedstrata.coordinator import RoundOutcome
from fedstrata.errors import CheckpointCorrupt
from fedstrata.runtime.failover import AckGate, CenterSnapshot, CommittedRound, RoundCommitter
from fedstrata.runtime.lease import LeaseLost
from fedstrata.runtime.records import RoundRecord

ids = st.lists(st.integers(0, 10_000), max_size=6)


@given(
    round_idx=st.integers(-1, 10**6),
    size=st.integers(0, 50),
    epoch=st.integers(1, 10**9),
    participants=st.dictionaries(st.integers(0, 10**6), st.integers(1, 1000), max_size=5),
    history=st.lists(st.tuples(st.integers(0, 100), st.text(max_size=12), ids), max_size=5),
    parts=st.dictionaries(st.text(min_size=1, max_size=8), st.binary(max_size=40), max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_snapshot_round_trips_exactly(  # noqa: PLR0917
    round_idx, size, epoch, participants, history, parts, seed
):
    rng = np.random.default_rng(seed)
    params = rng.normal(size=size).astype(np.float32)
    state = AdaptiveState(m=params * 2, v=params**2, step=round_idx + 1 if round_idx >= 0 else 0)
    snap = CenterSnapshot(
        round_idx, params, state.to_arrays(), "run-x", epoch, participants,
        tuple(CommittedRound(r, i, tuple(a)) for r, i, a in history), parts,
    )  # fmt: skip
    back = CenterSnapshot.from_bytes(snap.to_bytes())
    assert back.params.tobytes() == params.tobytes()
    assert back.params.dtype == np.float32
    restored = AdaptiveState.from_arrays(back.opt_state)
    assert restored.m.tobytes() == state.m.tobytes()
    assert restored.step == state.step
    assert (back.round_idx, back.run_name, back.epoch) == (round_idx, "run-x", epoch)
    assert back.participants == participants
    assert back.history == snap.history
    assert back.parts == parts


@pytest.mark.parametrize("blob", [b"", b"garbage", b"PK\x03\x04broken"])
def test_a_blob_that_is_not_a_snapshot_is_corrupt(blob):
    with pytest.raises(CheckpointCorrupt, match="not a center snapshot"):
        CenterSnapshot.from_bytes(blob)


def test_another_format_version_is_refused():
    snap = CenterSnapshot(0, np.zeros(3, np.float32), {}, "r", 1)
    blob = snap.to_bytes().replace(b'"format": 1', b'"format": 9')
    with pytest.raises(CheckpointCorrupt):
        CenterSnapshot.from_bytes(blob)


def test_the_gate_replies_only_once_the_round_is_committed():
    async def main():
        gate = AckGate(committed=2)
        assert await gate.wait(2) == (True, "")  # already committed
        waiter = asyncio.create_task(gate.wait(3))
        await asyncio.sleep(0)
        gate.commit(2)
        await asyncio.sleep(0)
        assert not waiter.done()
        gate.commit(3, voided="an upload broke")
        assert await waiter == (False, "round 3 voided: an upload broke")

    asyncio.run(main())


class _Sink:
    def __init__(self) -> None:
        self.saved: dict[int, bytes] = {}
        self.flushed = 0

    def snapshot(self, round_num, blob):
        self.saved[round_num] = blob

    def flush(self):
        self.flushed += 1

    def latest(self):
        return None


def _record(accepted, voided=None):
    outcome = RoundOutcome(0, len(accepted), tuple(accepted), (), (), 1.0, True)
    return RoundRecord(outcome, 0, 0, None, voided=voided)


def test_the_committer_writes_flushes_and_then_opens_the_gate():
    async def main():
        sink = _Sink()
        base = CenterSnapshot(-1, np.zeros(4, np.float32), {}, "run", 3)
        c = RoundCommitter(
            sink, base, run_id="run.3", participants=lambda: {7: 2}, fence=lambda: 5.0
        )
        params = np.ones(4, np.float32)
        await c(0, _record([7]), params, AdaptiveState(params, params, 1))
        assert c.gate.committed == 0
        assert sink.flushed == 1
        snap = CenterSnapshot.from_bytes(sink.saved[0])
        assert snap.history == (CommittedRound(0, "run.3", (7,)),)
        assert snap.participants == {7: 2}
        assert snap.epoch == 3
        await c(1, _record([7], voided="broke"), params, None)
        assert CenterSnapshot.from_bytes(sink.saved[1]).history == snap.history  # not counted
        assert await c.gate.wait(1) == (False, "round 1 voided: broke")

    asyncio.run(main())


def test_a_fenced_center_neither_commits_nor_acknowledges():
    async def main():
        sink = _Sink()
        base = CenterSnapshot(4, np.zeros(2, np.float32), {}, "run", 1)
        c = RoundCommitter(
            sink, base, run_id="run.1", participants=dict, fence=lambda: 0.1, margin_s=0.5
        )
        stopped = []

        async def stop_serving():
            stopped.append(c.gate.committed)

        c.on_fenced = stop_serving
        with pytest.raises(LeaseLost, match="round 5"):
            await c(5, _record([1]), np.zeros(2, np.float32), None)
        assert not sink.saved
        assert c.gate.committed == 4
        assert stopped == [4]  # it stopped serving before the run could say DONE

    asyncio.run(main())
