"""The round engine's buffered policy (FedBuff) as a pure state machine: events in,
commands out, no vectors and no clock."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.coordinator import (
    Accept,
    Buffering,
    ClientFailed,
    CloseRound,
    Command,
    DeadlinePassed,
    Reject,
    RoundCoordinator,
    RoundPolicy,
    SendModel,
    StartRound,
    UpdateArrived,
)
from fedstrata.errors import ConfigError, ProtocolError
from fedstrata.scheduling import Applied, FedBuffConfig, FedBuffServer, staleness_weight

IDS = np.arange(10, dtype=np.int64)


def buffered(concurrency=4, k=2, max_staleness=100, seed=0, *, selector=None, policy=None):
    rules = FedBuffConfig(buffer_size=k, max_staleness=max_staleness)
    return RoundCoordinator(
        policy or RoundPolicy(root_seed=seed), selector, Buffering(concurrency, rules)
    )


def start(m, version=0, ids=IDS) -> list[int]:
    (send,) = m.handle(StartRound(version, 0.0, ids))
    assert isinstance(send, SendModel)
    assert send.round_idx == version
    assert send.deadline_s is None
    return send.client_ids.tolist()


def sent(commands: list[Command]) -> list[int]:
    return [c for cmd in commands if isinstance(cmd, SendModel) for c in cmd.client_ids.tolist()]


def test_starts_concurrency_clients_and_refills_every_freed_slot() -> None:
    m = buffered(concurrency=4, k=3)
    first = start(m)
    assert len(first) == len(set(first)) == 4
    a, b = first[0], first[1]
    out = m.handle(UpdateArrived(a, 1.0, 2.0, 0))
    assert out[0] == Accept(a, 2.0, 0, 1.0)
    (send,) = out[1:]
    assert isinstance(send, SendModel)
    assert send.client_ids.size == 1
    assert send.client_ids[0] not in set(first) - {a}  # never a client still in flight
    refill = sent(m.handle(ClientFailed(b, "NaN update")))
    assert len(refill) == 1
    idle = next(c for c in IDS.tolist() if c not in m.in_flight)
    assert m.handle(ClientFailed(idle, "crashed")) == []  # not in flight: it holds no slot
    assert len(m.in_flight) == 4


def test_a_step_every_k_accepted_updates_advances_the_version() -> None:
    m = buffered(concurrency=5, k=2)
    flight = start(m)
    m.handle(UpdateArrived(flight[0], 1.0, 1.0, 0))
    m.handle(ClientFailed(flight[1], "crashed"))
    out = m.handle(UpdateArrived(flight[2], 3.0, 1.0, 0))
    assert [type(c) for c in out] == [Accept, CloseRound, SendModel]
    close = out[1]
    assert isinstance(close, CloseRound)
    o = close.outcome
    assert (o.round_idx, o.selected, o.end_s, o.applied) == (0, 3, 3.0, True)
    assert o.accepted == (flight[0], flight[2])
    assert o.failed == ((flight[1], "crashed"),)
    assert m.round_idx == 1
    assert out[2].round_idx == 1  # the freed slot trains on the new version


def test_staleness_is_counted_from_the_version_sent_and_scales_the_update() -> None:
    m = buffered(concurrency=6, k=1, max_staleness=2)
    flight = start(m, version=3)
    scales = []
    for i, cid in enumerate(flight[:4]):  # each accepted update is a step (K = 1)
        out = m.handle(UpdateArrived(cid, float(i), 1.0, 3))
        head = out[0]
        if i <= 2:
            assert isinstance(head, Accept)
            assert head.staleness == i
            scales.append(head.scale)
        else:
            assert isinstance(head, Reject)
            assert head.late
            assert "max_staleness 2" in head.reason
    np.testing.assert_allclose(scales, staleness_weight(np.arange(3)))
    assert m.round_idx == 6


def test_updates_from_clients_not_in_flight_are_rejected_and_free_nothing() -> None:
    m = buffered(concurrency=3)
    flight = start(m)
    outsider = next(c for c in IDS.tolist() if c not in flight)
    for event in (
        UpdateArrived(outsider, 1.0, 1.0, 0),  # never sent the model
        UpdateArrived(flight[0], 1.0, 1.0, 7),  # claims a version it was not sent
    ):
        (reject,) = m.handle(event)
        assert isinstance(reject, Reject)
        assert "not in flight" in reject.reason
        assert not reject.late
    m.handle(UpdateArrived(flight[0], 1.0, 1.0, 0))
    (dup,) = m.handle(UpdateArrived(flight[0], 2.0, 1.0, 0))  # reported already
    assert isinstance(dup, Reject)
    assert len(m.in_flight) == 3


def test_dispatch_draws_are_seeded() -> None:
    def trace(seed: int) -> list[int]:
        m = buffered(concurrency=3, seed=seed)
        order = start(m)
        for _ in range(8):
            order += sent(m.handle(UpdateArrived(order[-3], 0.0, 1.0)))
        return order

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)


@dataclass
class Lowest:
    """A selector that takes the idle client with the smallest id."""

    calls: list[tuple[int, list[int], int]] = field(default_factory=list)

    def select(self, round_idx, available, k, rng):
        self.calls.append((round_idx, available.tolist(), k))
        return available[:k]


def test_a_selector_chooses_who_takes_a_freed_slot() -> None:
    selector = Lowest()
    m = buffered(concurrency=3, selector=selector)
    assert start(m) == [0, 1, 2]
    assert sent(m.handle(UpdateArrived(1, 1.0, 1.0, 0))) == [1]
    assert selector.calls[-1] == (0, [1, *range(3, 10)], 1)


def test_a_selector_that_picks_a_busy_client_is_a_protocol_error() -> None:
    class Busy:
        def select(self, round_idx, available, k, rng):
            return np.array([-1])

    with pytest.raises(ProtocolError, match="one idle client"):
        start(buffered(selector=Busy()))


def test_what_a_buffered_run_does_not_take() -> None:
    m = buffered()
    assert m.handle(UpdateArrived(1, 0.0, 1.0)) == [Reject(1, "no round is open", late=True)]
    with pytest.raises(ProtocolError, match="before StartRound"):
        m.handle(ClientFailed(1, "x"))
    start(m)
    with pytest.raises(ProtocolError, match="no deadline"):
        m.handle(DeadlinePassed(5.0))
    with pytest.raises(ProtocolError, match="starts once"):
        m.handle(StartRound(1, 0.0, IDS))
    with pytest.raises(ConfigError, match="exceeds the 3 available"):
        start(buffered(concurrency=4), ids=IDS[:3])
    with pytest.raises(ConfigError, match="concurrency"):
        Buffering(0, FedBuffConfig())
    for policy, name in [
        (RoundPolicy(deadline_s=5.0), "deadline_s"),
        (RoundPolicy(clients_per_round=3), "clients_per_round"),
        (RoundPolicy(poisson_rate=0.5), "poisson_rate"),
        (RoundPolicy(min_clients=2), "min_clients"),
    ]:
        with pytest.raises(ConfigError, match=name):
            buffered(policy=policy)


# --------------------------------------------------------------------- laws

reports = st.lists(
    st.tuples(st.integers(0, 99), st.sampled_from(["update", "failure"])), max_size=60
)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(0, 3), st.integers(0, 99), reports)
def test_laws_of_the_buffered_policy(concurrency, k, max_staleness, seed, events) -> None:
    """Any order of reports: every dispatched client is accounted exactly once
    (accepted, rejected as too stale, failed, or still in flight), exactly
    ``concurrency`` are in flight after every event, a step closes after every K-th
    accepted update and only then, and each step's outcome lists its reports."""
    m = buffered(concurrency, k, max_staleness, seed)
    dispatched = start(m, ids=np.arange(8))
    sent_on = dict.fromkeys(dispatched, 0)  # the version each client in flight holds
    accepted, stale, failed, steps, since_step = [], [], [], 0, []
    for pick, kind in events:
        flight = sorted(m.in_flight)
        cid = flight[pick % len(flight)]
        if kind == "failure":
            out = m.handle(ClientFailed(cid, "crashed"))
            failed.append(cid)
            since_step.append(("failed", cid))
        else:
            out = m.handle(UpdateArrived(cid, 0.0, 1.0, sent_on[cid]))
            head = out[0]
            tau = m.round_idx - sent_on[cid] - sum(isinstance(c, CloseRound) for c in out)
            if isinstance(head, Accept):
                assert head.staleness == tau <= max_staleness
                accepted.append(cid)
                since_step.append(("accepted", cid))
            else:
                assert isinstance(head, Reject)
                assert head.late
                assert tau > max_staleness
                stale.append(cid)
                since_step.append(("stale", cid))
        closes = [c for c in out if isinstance(c, CloseRound)]
        if closes:
            (close,) = closes
            steps += 1
            o = close.outcome
            assert o.round_idx == steps - 1
            assert o.accepted == tuple(c for t, c in since_step if t == "accepted")
            assert len(o.accepted) == k
            assert o.late == tuple(c for t, c in since_step if t == "stale")
            assert [c for c, _ in o.failed] == [c for t, c in since_step if t == "failed"]
            assert o.selected == len(since_step)
            since_step = []
        new = sent(out)
        assert len(new) == 1
        assert all(isinstance(c, SendModel) and c.round_idx == m.round_idx
                   for c in out if isinstance(c, SendModel))  # fmt: skip
        del sent_on[cid]
        sent_on.update(dict.fromkeys(new, m.round_idx))
        dispatched += new
        assert m.in_flight == sent_on
        assert len(sent_on) == concurrency
    assert steps == len(accepted) // k
    assert sorted(dispatched) == sorted(accepted + stale + failed + list(sent_on))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.integers(0, 99), reports)
def test_the_engines_split_equals_the_standalone_server(concurrency, k, seed, events) -> None:
    """The coordinator's Accept / CloseRound executed with FedBuffServer.fold / flush
    steps exactly as FedBuffServer.receive does with each update's version."""
    rules = FedBuffConfig(buffer_size=k, max_staleness=2, server_lr=0.5)
    m = RoundCoordinator(RoundPolicy(root_seed=seed), buffering=Buffering(concurrency, rules))
    split, alone = FedBuffServer(3, rules), FedBuffServer(3, rules)
    tau = 0
    sent_on = dict.fromkeys(start(m, ids=np.arange(7)), 0)
    for i, (pick, kind) in enumerate(events):
        flight = sorted(sent_on)
        cid = flight[pick % len(flight)]
        delta = np.random.default_rng(i).standard_normal(3).astype(np.float32)
        base = sent_on.pop(cid)
        if kind == "failure":
            out = m.handle(ClientFailed(cid, "crashed"))
        else:
            out = m.handle(UpdateArrived(cid, 0.0, 1.0 + pick, base))
            expected = alone.receive(cid, delta, base, 1.0 + pick)
        for cmd in out:
            if isinstance(cmd, Accept):
                split.fold(cid, delta, cmd.weight, cmd.staleness, cmd.scale)
                tau = cmd.staleness
            elif isinstance(cmd, CloseRound):
                applied = split.flush(cid, tau)
                assert applied.staleness == expected.staleness
                assert isinstance(expected, Applied)
                assert applied.step.tobytes() == expected.step.tobytes()
                assert applied.new_version == expected.new_version == m.round_idx
            elif isinstance(cmd, SendModel):
                sent_on.update(dict.fromkeys(cmd.client_ids.tolist(), cmd.round_idx))
        assert split.version == alone.version
        assert split.state.buffer.tobytes() == alone.state.buffer.tobytes()
