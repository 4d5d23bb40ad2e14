import numpy as np
import pytest

from fedstrata.coordinator import (
    Accept,
    ClientFailed,
    CloseRound,
    DeadlinePassed,
    Reject,
    RoundCoordinator,
    RoundPolicy,
    SendModel,
    StartRound,
    Topology,
    UpdateArrived,
)
from fedstrata.coordinator.topology import Tier, TopologyNode
from fedstrata.errors import ConfigError, ProtocolError

IDS = np.arange(10, dtype=np.int64)


def start(machine, r=0, now=0.0, ids=IDS):
    (cmd,) = machine.handle(StartRound(r, now, ids))
    assert isinstance(cmd, SendModel)
    return cmd


def test_full_cohort_and_acceptance():
    m = RoundCoordinator(RoundPolicy())
    send = start(m)
    np.testing.assert_array_equal(send.client_ids, IDS)
    assert send.deadline_s is None
    assert m.handle(UpdateArrived(3, 1.0, 5.0)) == [Accept(3, 5.0)]
    (close,) = m.handle(DeadlinePassed(2.0))
    assert isinstance(close, CloseRound)
    assert close.outcome.accepted == (3,)
    assert close.outcome.applied
    assert len(close.outcome.late) == 9  # never reported


def test_selection_is_seeded_and_sorted():
    a = RoundCoordinator(RoundPolicy(clients_per_round=4, root_seed=1))
    b = RoundCoordinator(RoundPolicy(clients_per_round=4, root_seed=1))
    ca, cb = start(a).client_ids, start(b).client_ids
    np.testing.assert_array_equal(ca, cb)
    assert ca.size == 4
    assert np.all(np.diff(ca) > 0)
    a.handle(DeadlinePassed(1.0))


def test_rejects_unknown_duplicate_and_late():
    m = RoundCoordinator(RoundPolicy(clients_per_round=3, deadline_s=10.0, root_seed=0))
    cohort = start(m, now=100.0).client_ids.tolist()
    outsider = next(i for i in range(10) if i not in cohort)
    (r1,) = m.handle(UpdateArrived(outsider, 101.0, 1.0))
    assert isinstance(r1, Reject)
    assert "not selected" in r1.reason
    assert isinstance(m.handle(UpdateArrived(cohort[0], 101.0, 1.0))[0], Accept)
    (r2,) = m.handle(UpdateArrived(cohort[0], 102.0, 1.0))
    assert isinstance(r2, Reject)
    assert "duplicate" in r2.reason
    (r3,) = m.handle(UpdateArrived(cohort[1], 111.0, 1.0))
    assert isinstance(r3, Reject)
    assert r3.late
    m.handle(ClientFailed(cohort[2], "NaN update"))
    (close,) = m.handle(DeadlinePassed(110.0))
    out = close.outcome
    assert out.accepted == (cohort[0],)
    assert out.failed == ((cohort[2], "NaN update"),)
    assert out.late == (cohort[1],)
    (after,) = m.handle(UpdateArrived(cohort[1], 120.0, 1.0))
    assert isinstance(after, Reject)
    assert after.late


def test_failure_after_acceptance_retracts_the_update():
    m = RoundCoordinator(RoundPolicy(min_clients=1))
    start(m)
    m.handle(UpdateArrived(1, 1.0, 1.0))
    m.handle(ClientFailed(1, "payload could not be decoded"))
    (close,) = m.handle(DeadlinePassed(2.0))
    assert close.outcome.accepted == ()
    assert not close.outcome.applied


def test_min_clients_and_protocol_errors():
    m = RoundCoordinator(RoundPolicy(min_clients=2))
    start(m)
    m.handle(UpdateArrived(0, 1.0, 1.0))
    (close,) = m.handle(DeadlinePassed(1.0))
    assert not close.outcome.applied
    with pytest.raises(ProtocolError, match="no round is open"):
        m.handle(DeadlinePassed(2.0))
    start(m, r=1)
    with pytest.raises(ProtocolError, match="while round 1 is open"):
        m.handle(StartRound(2, 0.0, IDS))
    with pytest.raises(ConfigError, match="min_clients"):
        RoundPolicy(min_clients=0)


def test_topology_flat_and_tree_validation():
    flat = Topology.flat([1, 2, 3])
    assert flat.is_flat
    assert flat.depth == 1
    assert flat.parent_of() == {1: "center", 2: "center", 3: "center"}
    edge_a = TopologyNode("edge-a", Tier.EDGE, clients=(1, 2))
    edge_b = TopologyNode("edge-b", Tier.EDGE, clients=(3,))
    region = TopologyNode("region-1", Tier.REGION, children=(edge_a, edge_b))
    tree = Topology(TopologyNode("center", Tier.CENTER, children=(region,)))
    assert tree.depth == 3
    assert tree.parent_of()[3] == "edge-b"
    with pytest.raises(ConfigError, match="more than one aggregator"):
        Topology(
            TopologyNode(
                "center",
                Tier.CENTER,
                children=(edge_a, TopologyNode("e", Tier.EDGE, clients=(2,))),
            )
        )
    with pytest.raises(ConfigError, match="root must be the center"):
        Topology(edge_a)


def test_poisson_sampling_has_the_expected_rate():
    m = RoundCoordinator(RoundPolicy(poisson_rate=0.1, root_seed=3))
    ids = np.arange(5000, dtype=np.int64)
    sizes = []
    for r in range(5):
        sizes.append(start(m, r=r, ids=ids).client_ids.size)
        m.handle(DeadlinePassed(float(r)))
    assert all(400 < n < 600 for n in sizes)
    assert len(set(sizes)) > 1  # the cohort size varies, as Poisson sampling does
    with pytest.raises(ConfigError, match="poisson_rate"):
        RoundPolicy(poisson_rate=0.0)


def test_in_flight_lists_the_cohort_members_yet_to_report():
    m = RoundCoordinator(RoundPolicy(clients_per_round=3, root_seed=0))
    assert m.in_flight == {}
    cohort = start(m, r=2).client_ids.tolist()
    m.handle(UpdateArrived(cohort[0], 1.0, 1.0))
    m.handle(ClientFailed(cohort[1], "crashed"))
    assert m.in_flight == {cohort[2]: 2}
    m.handle(DeadlinePassed(2.0))
    assert m.in_flight == {}
