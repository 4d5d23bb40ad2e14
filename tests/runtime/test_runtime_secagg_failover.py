"""Center checkpoints under secure aggregation and distributed DP (issue 13, issue 15):
a standby that takes over a crashed center continues with the uninterrupted run's ε
and model, the simulator's; a round whose masked inputs went to the dead center is
never summed again over those inputs."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import replace

import numpy as np
import pytest
from rthelpers import SMALL, run_federation, tokens_for

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.core.state import MemoryStateStore
from fedstrata.errors import CheckpointCorrupt, TransportError
from fedstrata.runtime import GrpcLink, TokenTable, deployment
from fedstrata.runtime.client_link import Backoff
from fedstrata.runtime.client_terms import ResidualTerms
from fedstrata.runtime.failover import CenterSnapshot
from fedstrata.runtime.lease import LeaseTiming, SqlLease
from fedstrata.runtime.records import TaskKind, TaskSpec
from fedstrata.runtime.relink import FailoverLink
from fedstrata.runtime.secagg_failover import InputLedger, SecAggPart, run_name, term_run_id
from fedstrata.runtime.secagg_wire import Phase
from fedstrata.runtime.standby import CenterNode, FailoverSettings

ROUNDS = 4
SECURE = ["secagg.enabled=true", "secagg.dropout_rate=0.0"]
CONFIG = [
    *SMALL, f"rounds.rounds={ROUNDS}", "privacy.epsilon=2", "privacy.mechanism=distributed",
    *SECURE,
]  # fmt: skip
EF = [*SMALL, f"rounds.rounds={ROUNDS}", "compression.preset=int8",
      "compression.error_feedback=true"]  # fmt: skip
# a lease long enough that a loaded host's late renewal does not depose a live center
FAST = FailoverSettings(lease=LeaseTiming(lease_s=1.5), poll_s=0.05, rejoin_timeout_s=30.0)
RETRY = Backoff(attempts=40, base_s=0.05, max_s=0.3)


class StuckSink:
    """The center nodes' shared store; the commit of round ``stuck`` never completes
    (its snapshot is stored, its flush hangs until released): the center dies there,
    after its round was made durable and before the next round opens."""

    def __init__(self, stuck: int = -1) -> None:
        self.blobs: dict[int, bytes] = {}
        self.stuck, self.release = stuck, threading.Event()

    def snapshot(self, round_num: int, blob: bytes) -> None:
        self.blobs[round_num] = blob

    def flush(self) -> None:
        if max(self.blobs) == self.stuck:
            self.release.wait(60)

    def latest(self):
        return None if not self.blobs else (max(self.blobs), self.blobs[max(self.blobs)])


def _ports(n: int) -> list[str]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    out = [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    for s in socks:
        s.close()
    return out


class _Hold:
    """Shared by the clients' links: in round ``at`` of the first term, the first update
    (or masked input) goes through and the others wait until the center is dead, then
    fail as a call to a dead center does. Later terms pass."""

    def __init__(self, at: int | None = None) -> None:
        self.at, self.passed, self.dead = at, False, asyncio.Event()

    async def gate(self, round_idx: int) -> None:
        if self.at is None or round_idx != self.at or self.dead.is_set():
            return
        if not self.passed:
            self.passed = True
            return
        await self.dead.wait()
        raise TransportError("the call broke: its center died")


class _Sends:
    """A client link that notes each update or masked input it is handed (then held
    by ``hold``)."""

    def __init__(self, link, sent: list[tuple[int, int]], cid: int, hold: _Hold) -> None:
        self.link, self.sent, self.cid, self.hold = link, sent, cid, hold
        self.committed: dict[int, bool] | None = None  # set: notes each UNMASK answer
        self.answers: list[tuple[int, bool]] = []  # (round, committed when answered)

    def __getattr__(self, name):
        return getattr(self.link, name)

    async def secagg_step(self, round_idx, phase, data, **kw):
        if phase == Phase.INPUT and data:
            self.sent.append((self.cid, round_idx))
            await self.hold.gate(round_idx)
        answer = await self.link.secagg_step(round_idx, phase, data, **kw)
        if phase == Phase.UNMASK and answer[0] and self.committed is not None:
            self.answers.append((round_idx, round_idx in self.committed))
        return answer

    async def submit(self, round_idx, *args):
        self.sent.append((self.cid, round_idx))
        await self.hold.gate(round_idx)
        return await self.link.submit(round_idx, *args)


async def _failover(dep, tmp_path, sink: StuckSink, kill_when, hold: _Hold | None = None):
    """Center node 0 active, node 1 standby, the clients over both addresses; node 0
    is cancelled (a crash: the lease lapses) once ``kill_when(node0, sent)``."""
    hold = hold or _Hold()
    tokens, addrs = tokens_for(dep.num_clients), _ports(2)
    url = str(tmp_path / "lease.sqlite")
    nodes = [
        CenterNode(
            dep, lease=SqlLease(url, "fed", f"c{i}"), sink=sink, address=addrs[i],
            tokens=TokenTable(tokens), settings=FAST,
        )
        for i in range(2)
    ]  # fmt: skip
    sent: list[tuple[int, int]] = []
    agents, links = [], []

    async def client(cid: int):
        link = FailoverLink(addrs, lambda t: GrpcLink(t, cid, tokens[cid]), connect_timeout_s=20)
        async with link:
            sends = _Sends(link, sent, cid, hold)
            sends.committed = sink.blobs
            links.append(sends)
            agent = dep.client(sends, cid, backoff=RETRY)  # type: ignore[arg-type]
            agents.append(agent)
            return await agent.run()

    active = asyncio.create_task(nodes[0].run())
    while SqlLease(url, "fed", "probe").read() is None:
        await asyncio.sleep(0.01)
    standby = asyncio.create_task(nodes[1].run())
    clients = [asyncio.create_task(client(c)) for c in range(dep.num_clients)]
    try:
        while not kill_when(nodes[0], sent):
            await asyncio.sleep(0.005)
        active.cancel()  # crash: no reply, no DONE, the lease lapses
        await asyncio.gather(active, return_exceptions=True)
        hold.dead.set()
        outcome = await standby
        reports = await asyncio.gather(*clients)
    finally:
        sink.release.set()
    await asyncio.gather(active, return_exceptions=True)
    if dep.config.secagg.enabled:  # an UNMASK is answered only once its round is durable
        answers = [a for link in links for a in link.answers]
        assert answers
        assert all(committed for _, committed in answers), answers
    return outcome, reports, agents, sent


def _eps(rounds):
    return [r.privacy.epsilon_spent for r in rounds]


@pytest.mark.parametrize(
    "overrides",
    [CONFIG, [*EF, *SECURE], [*CONFIG, "downlink.preset=int8", "downlink.history=2"]],
    ids=["distributed-dp", "error-feedback", "downlink"],
)
def test_a_standby_continues_the_uninterrupted_runs_model_and_epsilon(tmp_path, overrides):
    """The active center dies once round 1 is durable, before round 2 opens: the standby
    resumes from that checkpoint (the DP budget and the secure aggregator's record in
    it, and the downlink encoder; the clients keep their error-feedback residuals and
    their downlink replica) and ends with the uninterrupted run's model, bit for bit,
    and its ε, which are the simulator's."""
    cfg = load_config(overrides=overrides)
    dep = deployment(cfg)
    sim = run(cfg).simulation
    plain, _ = asyncio.run(run_federation(dep))
    assert plain.params.tobytes() == sim.params.tobytes()
    sink = StuckSink(stuck=1)

    def dead(node, sent):
        return 1 in sink.blobs

    outcome, _, _, sent = asyncio.run(asyncio.wait_for(_failover(dep, tmp_path, sink, dead), 180))
    assert (outcome.epoch, outcome.start_round) == (2, 2)
    resumed = CenterSnapshot.from_bytes(sink.blobs[1])
    parts = {"secagg"} | ({"dp"} if cfg.privacy.enabled else set())
    assert set(resumed.parts) == parts | ({"downlink"} if cfg.downlink.enabled else set())
    assert [h.round_idx for h in resumed.history] == [0, 1]
    assert {r for _, r in sent} == set(range(ROUNDS))  # every round's inputs went out once
    result = outcome.result
    assert result is not None
    assert [r.outcome.round_idx for r in result.rounds] == [2, 3]
    assert result.params.tobytes() == plain.params.tobytes() == sim.params.tobytes()
    if cfg.privacy.enabled:
        want = [m.privacy.epsilon_spent for m in sim.rounds[2:]]
        assert _eps(result.rounds) == _eps(plain.rounds[2:]) == want
    accepted = [sorted(r.outcome.accepted) for r in result.rounds]
    assert 1 in sink.blobs  # round 1 is durable (its acknowledgements never went out)
    assert accepted == [sorted(r.outcome.accepted) for r in plain.rounds[2:]]
    final = CenterSnapshot.from_bytes(sink.blobs[ROUNDS - 1])
    assert [h.round_idx for h in final.history] == list(range(ROUNDS))


def test_inputs_sent_to_the_dead_center_are_not_sent_again(tmp_path):
    """The center dies after masked inputs of round 2 went to it (it could have
    unmasked their sum): those clients take no part in round 2 again (they withdraw
    after the key agreement); every round is charged once, so the run ends with the
    uninterrupted run's ε."""
    cfg = load_config(overrides=CONFIG)
    dep = deployment(cfg)
    plain, _ = asyncio.run(run_federation(dep))
    sink = StuckSink()

    def dead(node, sent):
        current = None if node.center is None else node.center.secure.current
        return (
            current is not None
            and current.rnd.round_idx == 2
            and bool(current.steps[Phase.INPUT].received)
        )

    outcome, reports, agents, sent = asyncio.run(
        asyncio.wait_for(_failover(dep, tmp_path, sink, dead, _Hold(2)), 180)
    )
    result = outcome.result
    assert result is not None
    assert (outcome.epoch, outcome.start_round) == (2, 2)
    first = {c for c, r in sent if r == 2}  # input of round 2 sent in the first term
    (rerun,) = [r for r in result.rounds if r.outcome.round_idx == 2]
    assert first
    assert not first & set(rerun.outcome.accepted)
    told = {
        agent.client_id
        for agent, report in zip(agents, reports, strict=True)
        if any(r == 2 and "already went" in why for r, why in report.refused)
    }
    assert told == first  # each of them withdrew from the rerun
    assert _eps(result.rounds)[-1] == _eps(plain.rounds)[-1]
    assert [r.outcome.round_idx for r in result.rounds] == [2, 3]


def test_a_round_run_again_rolls_the_clients_residuals_back(tmp_path):
    """Error feedback without secure aggregation: the center dies after updates of
    round 2 reached it (encoded, their residuals moved, never committed); the standby
    runs round 2 again and every client's residual is rolled back to before it, so the
    run ends with the uninterrupted run's model bit for bit."""
    cfg = load_config(overrides=EF)
    dep = deployment(cfg)
    plain, _ = asyncio.run(run_federation(dep))
    sink = StuckSink()

    def dead(node, sent):  # one update of round 2 accepted, the others held
        c = None if node.center is None else node.center.coordinator
        return c is not None and c.round_idx == 2 and len(c.in_flight) == 4

    outcome, _, agents, sent = asyncio.run(
        asyncio.wait_for(_failover(dep, tmp_path, sink, dead, _Hold(2)), 180)
    )
    assert (outcome.epoch, outcome.start_round) == (2, 2), sent
    assert len([c for c, r in sent if r == 2]) > 5, sent  # sent to both terms
    assert outcome.result is not None
    assert outcome.result.params.tobytes() == plain.params.tobytes()
    assert all(a.terms is not None for a in agents)


def test_the_residuals_are_kept_for_a_new_term_and_reset_for_a_new_run():
    store = MemoryStateStore()
    terms = ResidualTerms(store)
    assert terms.change(None, "abc.1") == "run"
    assert terms.change("abc.1", "abc.1") == "same"
    assert terms.change("abc.1", "abc.2") == "term"
    assert terms.change("abc.1", "xyz.2") == "run"
    store.put(3, "ef", np.ones(4, np.float32))
    terms.before_encode(5)
    store.put(3, "ef", np.full(4, 7, np.float32))  # round 5 encoded
    assert not terms.new_term(6)  # round 5 was committed: kept
    assert store.get(3, "ef").tolist() == [7] * 4
    terms.before_encode(6)
    store.put(3, "ef", np.full(4, 9, np.float32))
    assert terms.new_term(6)  # round 6 runs again: rolled back
    assert store.get(3, "ef").tolist() == [7] * 4
    terms.new_run()
    assert store.get(3, "ef") is None
    store.put(3, "ef", np.ones(4, np.float32))
    terms.before_encode(8)
    store.put(3, "ef", np.zeros(4, np.float32))
    task = TaskSpec(TaskKind.TRAIN, 8, 0, None, None, 0, "abc.3")
    assert terms.switch("abc.2", task)  # a new term re-running round 8: kept, rolled back
    assert store.get(3, "ef").tolist() == [1] * 4
    assert not terms.switch("abc.3", replace(task, run_id="other"))  # another run: reset
    assert store.get(3, "ef") is None


def test_a_client_sends_one_rounds_input_to_one_term_of_a_run():
    ledger = InputLedger()
    assert ledger.refusal(term_run_id("abc", 1), 3) is None
    ledger.record(term_run_id("abc", 1), 3)
    assert ledger.refusal(term_run_id("abc", 1), 4) is None
    assert "already went" in (ledger.refusal(term_run_id("abc", 2), 3) or "")
    assert ledger.refusal(term_run_id("xyz", 1), 3) is None  # another run
    ledger.record("0123abcd", 0)  # a center without terms: its id is the run
    assert ledger.name == "0123abcd"
    assert ledger.refusal("0123abcd", 3) is None
    assert run_name("a.b.7") == "a.b"
    assert run_name("a.b") == "a.b"


def test_the_secagg_part_round_trips_and_refuses_what_is_not_a_record():
    dep = deployment(load_config(overrides=CONFIG))
    center = dep.center()
    assert center.secure is not None
    agg = center.secure.aggregator
    agg.withheld, agg.lost = {1, 4}, {2}
    blob = SecAggPart(agg).save()
    other = dep.center().secure.aggregator
    SecAggPart(other).restore(blob)
    assert (other.withheld, other.lost) == ({1, 4}, {2})
    for bad in (b"not json", json.dumps([1]).encode(), b"{}"):
        with pytest.raises(CheckpointCorrupt):
            SecAggPart(other).restore(bad)


def test_the_downlink_part_resumes_the_encoder_and_refuses_another_blob():
    from fedstrata.core.context import RoundContext
    from fedstrata.runtime.downlink import DownlinkAsk, DownlinkPart

    dep = deployment(load_config(overrides=[*SMALL, "downlink.preset=int8"]))
    first = dep.center().downlink
    assert first is not None
    params = dep.initial_params()
    first.start(params)
    for r in range(3):
        first.publish(params + 0.01 * (r + 1), RoundContext(r, 1))
    blob = DownlinkPart(first).save()
    second = dep.center().downlink
    DownlinkPart(second).restore(blob)
    second.start(params)  # the run's start resumes the encoder, not version 0
    assert second.version == first.version == 3
    assert second.message(DownlinkAsk(1)) == first.message(DownlinkAsk(1))
    with pytest.raises(CheckpointCorrupt):
        DownlinkPart(second).restore(b"not a snapshot")
