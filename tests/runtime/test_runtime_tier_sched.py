"""Scheduling through an explicit tree's edges (runtime/tier_sched.py): the center
selects over the whole tree and sizes each member's work to the global deadline, as
the hierarchical simulator does; its decisions and (replayed) model equal the
simulator's."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_runtime_settle import FakeClock, SlowTrainer
from tiertree import run_regions, run_tree

from fedstrata.api import run
from fedstrata.builders import local_plan
from fedstrata.config import load_config
from fedstrata.core.training import LocalPlan
from fedstrata.errors import DataError, ProtocolError
from fedstrata.runtime import check_supported, deployment
from fedstrata.runtime.pbconv import task_from_pb, task_to_pb, upload_header
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.records import TaskKind, TaskSpec
from fedstrata.runtime.sched_reports import DeviceReport
from fedstrata.runtime.tier_pbconv import (
    profiles_from_pb,
    put_profiles,
    put_reports,
    reports_from_pb,
)
from fedstrata.runtime.tier_periods import TreeSpec
from fedstrata.runtime.tier_sched import EdgeFollower, tree_scheduler
from fedstrata.runtime.tier_work import MemberReport, TierWork
from fedstrata.scheduling import Registry, WorkStatus

EDGES = {"e0": [0, 1, 2], "e1": [3, 4, 5]}
TREE = [
    "output.run_store=false",
    "sim.workers=0",
    "data.num_clients=6",
    "rounds.rounds=2",
    "rounds.clients_per_round=4",
    "model.kind=logreg",
    "client.steps=3",
    "client.epochs=null",
    "topology.mode=explicit",
    'topology.edges={"e0": [0, 1, 2], "e1": [3, 4, 5]}',
    "rounds.deadline_s=30",
    "scheduling.allocation=true",
    "scheduling.max_steps=5",
]


def _profiles(dep, slow_gflops: float = 5.0):
    """Fast devices, client 5 slower (``slow_gflops``; the rest 50), so the
    selection's predicted durations differ."""

    def report(cid: int) -> DeviceReport:
        gflops = slow_gflops if cid == 5 else 50.0
        n = len(dep.local_data(cid))
        return DeviceReport(gflops, 4.0, 5.0, 100.0, 100.0, local_examples=n)

    return report


def _profile_registry(path, dep, report) -> str:
    """A registry holding only the deployment's profiles: the simulator's devices."""
    with Registry.open(path) as reg:
        for cid in range(dep.num_clients):
            reg.upsert_devices(report(cid).profiles(cid))
    return str(path)


def _decisions(url: str) -> dict[int, list[tuple[int, int]]]:
    """Each round's (client, assigned examples) in the registry's round_history."""
    with Registry.open(url) as reg:
        h = reg.history()
    out: dict[int, list[tuple[int, int]]] = {}
    for r, c, a in zip(h.round_idx, h.device_id, h.assigned_work, strict=True):
        out.setdefault(int(r), []).append((int(c), int(a)))
    return {r: sorted(v) for r, v in out.items()}


NO_ALLOC = ["scheduling.allocation=false", "topology.kappa_edge=2", "scheduling.overselect=0.25"]


@pytest.mark.parametrize(
    ("extra", "same_cohorts", "steps", "slow_gflops"),
    [
        (["scheduling.overselect=0.25"], [0, 1], 5, 5.0),  # uniform draw: every round
        (["scheduling.selector=oort"], [0], 5, 5.0),  # Oort learns from measured durations
        (NO_ALLOC, [0, 1], 3, 5.0),  # HierFAVG's periods: the plans of client.steps
        (["scheduling.overselect=0.25"], [0, 1], 5, 1e-7),  # client 5 cannot do 1 step
    ],
    ids=["overselect", "oort", "periods", "infeasible"],
)
def test_the_center_schedules_the_tree_as_the_simulator(
    tmp_path, extra, same_cohorts, steps, slow_gflops
):
    deployed = tmp_path / "deployed.db"
    cfg = load_config(overrides=[*TREE, *extra, f"scheduling.registry_url={deployed}"])
    dep = deployment(cfg)
    report = _profiles(dep, slow_gflops)
    out = asyncio.run(run_tree(dep, EDGES, profiles=report))
    result = out.result
    assert not result.rejections
    assert [r.outcome.applied for r in result.rounds] == [True, True]
    assert all(r.schedule is not None for r in result.rounds)  # the center learnt
    # the edges trained the center's cohort, kappa_edge edge rounds each
    got = _decisions(str(deployed))
    kappa = cfg.topology.kappa_edge
    for r in range(2):
        trained = sorted(
            c
            for rep in out.edges.values()
            if rep is not None
            for c in rep.rounds[kappa * r].outcome.accepted
        )
        assert trained == [c for c, _ in got[r]]
    with Registry.open(deployed) as reg:
        history = reg.history()
    assert (history.status == WorkStatus.COMPLETED).all()
    assert (history.actual_s > 0).all()  # the edges' reports reached the center
    # the simulator over the same devices makes the same decisions
    sim_url = _profile_registry(tmp_path / "sim.db", dep, report)
    sim_cfg = load_config(overrides=[*TREE, *extra, f"scheduling.registry_url={sim_url}"])
    run(sim_cfg)
    want = _decisions(sim_url)
    size = cfg.client.batch_size
    # round 0: the same cohort and allocation from the same profiles; later rounds
    # learn from measured (deployment) or simulated durations, which differ: the
    # uniform draw's cohort stays the simulator's, Oort's and the allocation may not
    assert got[0] == want[0]
    assert min(a for _, a in got[0]) > 0
    assert max(a for _, a in got[0]) <= steps * size  # max_steps (or the plan's)
    for r in same_cohorts:
        assert [c for c, _ in got[r]] == [c for c, _ in want[r]], r
    if slow_gflops < 1e-3:  # skipped by the scheduled selector, in both
        assert all(5 not in [c for c, _ in got[r]] for r in got)
        assert [len(got[r]) for r in got] == [5, 5]  # ceil(4 x 1.25) of the 5 feasible
    # replaying the deployment's record, the simulator computes its model bit for bit
    replay = load_config(overrides=[*TREE, *extra, f"scheduling.replay_url={deployed}"])
    sim = run(replay).simulation
    assert result.params.tobytes() == sim.params.tobytes()


SLOW = 2  # a client of edge e0 whose device is slow: it stops at the deadline
STRAGGLER = ["scheduling.max_steps=10", "rounds.deadline_s=3", "scheduling.min_fraction=0.8"]


def _slow_agents(dep, step_s: float):
    """Client agents with fast profiles; client ``SLOW`` trains ``step_s`` a step on
    a fake clock (test_runtime_settle's SlowTrainer), so it stops at the deadline."""
    fast = _profiles(dep)
    clock = FakeClock()

    def agent(link, cid):
        if cid != SLOW:
            return dep.client(link, cid, profile=fast(cid))
        slow = SlowTrainer(dep.factory(), clock, step_s)
        out = dep.client(link, cid, slow, profile=fast(cid))
        out.now = out.local.now = clock
        return out

    return agent


@pytest.mark.parametrize(
    ("extra", "step_s", "status"),
    [
        (["scheduling.max_steps=10", "rounds.deadline_s=60"], 10.0, WorkStatus.PARTIAL),
        (  # stops at 0.9 x 3 s: 7 of 10 steps, below 0.8 (one round: it waits 3 s)
            [*STRAGGLER, "rounds.rounds=1"],
            0.375,
            WorkStatus.DROPPED,
        ),
    ],
    ids=["partial", "dropped"],
)
def test_partial_work_is_settled_at_the_edge_as_the_simulator_settles(
    tmp_path, extra, step_s, status
):
    """A member too slow for its allocation stops at the deadline: its edge settles
    the steps it did with the shared rule (5 of 10 steps weighs 5/10; 7 of 10 under
    min_fraction 0.8 is a straggler, dropped), the center records it in
    round_history, and the simulator replaying that record computes the model."""
    url = tmp_path / "devices.db"
    cfg = load_config(
        overrides=[
            *TREE, "rounds.clients_per_round=null", *extra, f"scheduling.registry_url={url}",
        ]
    )  # fmt: skip
    dep = deployment(cfg)
    out = asyncio.run(run_tree(dep, EDGES, agents=_slow_agents(dep, step_s)))
    assert [r.outcome.applied for r in out.result.rounds] == [True] * cfg.rounds.rounds
    with Registry.open(url) as reg:
        h = reg.history()
    mine = h.device_id == SLOW
    assert (h.status[mine] == status).all()
    assert (h.status[~mine] == WorkStatus.COMPLETED).all()
    assert sorted(set(h.device_id.tolist())) == list(range(6))
    if status == WorkStatus.PARTIAL:
        per = min(cfg.client.batch_size, len(dep.local_data(SLOW)))
        assert h.completed_work[mine].tolist() == [5 * per, 5 * per]
        assert all(r.schedule is not None and r.schedule.partial == 1 for r in out.result.rounds)
    else:
        e0 = out.edges["e0"]
        assert e0 is not None
        assert all(SLOW in r.outcome.late for r in e0.rounds)
        assert all(r.schedule is not None and r.schedule.dropped == 1 for r in out.result.rounds)
    replay = cfg.model_copy(
        update={"scheduling": cfg.scheduling.model_copy(
            update={"registry_url": None, "replay_url": str(url)}
        )}
    )  # fmt: skip
    sim = run(replay).simulation
    assert out.result.params.tobytes() == sim.params.tobytes()


def test_the_tree_cohort_and_reports_cross_the_wire():
    work = TierWork((4, 1, 3), (5, 0, 2))
    steps3 = LocalPlan(epochs=None, steps=3)
    task = TaskSpec(TaskKind.TRAIN, 3, 7, steps3, 30.0, 10, "run", None, work)
    assert task_from_pb(task_to_pb(task)).work == work
    plain = TaskSpec(TaskKind.TRAIN, 3, 7, steps3)
    assert task_from_pb(task_to_pb(plain)).work is None
    assert work.plan(1, steps3) == steps3  # 0: the task's plan
    assert work.plan(4, LocalPlan(epochs=1)).steps == 5
    with pytest.raises(DataError, match="not in the cohort"):
        work.plan(9, steps3)
    with pytest.raises(DataError):
        TierWork((1, 1), (2, 2))

    reports = (
        MemberReport(1, "accepted", 40, 0.5, 1.5, 0.2, 0.7, 4, True),
        MemberReport(3, "failed"),
    )
    header = pb.StreamHeader(client_id=6)
    put_reports(header, reports)
    assert reports_from_pb(header, 6) == reports
    header.tier_reports[0].download_s = -1.0
    with pytest.raises(ProtocolError, match="bad member report"):
        reports_from_pb(header, 6)

    hello = pb.Hello(client_id=6)
    profiles = {0: DeviceReport(1.5, 4.0, 5.0, 100.0, 100.0, local_examples=20)}
    put_profiles(hello, profiles)
    assert profiles_from_pb(hello) == profiles
    header = pb.StreamHeader(client_id=6, content=pb.StreamHeader.PARTIAL)
    put_profiles(header, profiles)  # with a partial: clients that joined later
    assert upload_header(header, 6).profiles == tuple(profiles.items())
    header.tier_profiles[0].profile.cpu_score = -1.0
    with pytest.raises(ProtocolError, match="cpu_score"):
        profiles_from_pb(header)


def test_under_secure_aggregation_the_edges_report_before_their_masked_sums(tmp_path):
    """Two-tier secure aggregation with every client selected: each edge sends its
    members' reports (a partial header without data) before its masked cluster sum;
    the center learns and records every member, and the simulator replaying the
    record computes the deployment's model."""
    url = tmp_path / "devices.db"
    cfg = load_config(
        overrides=[
            *TREE, "rounds.clients_per_round=null", "secagg.enabled=true",
            "secagg.dropout_rate=0", f"scheduling.registry_url={url}",
        ]
    )  # fmt: skip
    check_supported(cfg)
    dep = deployment(cfg)
    out = asyncio.run(run_tree(dep, EDGES, profiles=_profiles(dep)))
    assert not out.result.rejections
    assert [len(r.outcome.accepted) for r in out.result.rounds] == [2, 2]
    assert all(r.schedule is not None for r in out.result.rounds)
    with Registry.open(url) as reg:
        h = reg.history()
    assert len(h) == 12  # 6 members x 2 rounds, each reported by its edge
    assert (h.status == WorkStatus.COMPLETED).all()
    assert (h.actual_s > 0).all()
    replay = cfg.model_copy(
        update={"scheduling": cfg.scheduling.model_copy(
            update={"registry_url": None, "replay_url": str(url)}
        )}
    )  # fmt: skip
    assert out.result.params.tobytes() == run(replay).simulation.params.tobytes()


REGIONS = {"r0": {"e0": [0, 1], "e1": [2, 3]}, "r1": {"e2": [4, 5], "e3": [6, 7]}}


@pytest.mark.parametrize("straggler", [False, True], ids=["all", "straggler"])
def test_regions_relay_the_centers_decision_and_the_edges_reports(tmp_path, straggler):
    """Center <- 2 regions <- 2 edges each: the regions relay the center's cohort and
    steps down and their edges' profiles and reports up; the decision equals the
    simulator's and its replay computes the model. With a straggler (client 2 of
    edge e1, dropped under min_fraction), its edge waits for the deadline and its
    region for that edge: their partials still count, as in the simulator."""
    deployed = tmp_path / "deployed.db"
    tree = [
        *TREE, "data.num_clients=8", "rounds.clients_per_round=5", "topology.edges=null",
        f"topology.regions={REGIONS}", "scheduling.overselect=0.2",
    ]  # fmt: skip
    if straggler:  # one round: it waits for the deadline
        tree += [*STRAGGLER, "rounds.clients_per_round=null", "rounds.rounds=1"]
    cfg = load_config(overrides=[*tree, f"scheduling.registry_url={deployed}"])
    dep = deployment(cfg)
    report = _profiles(dep)
    agents = _slow_agents(dep, 0.375) if straggler else None
    out = asyncio.run(run_regions(dep, REGIONS, profiles=report, agents=agents))
    assert not out.result.rejections
    assert [r.outcome.applied for r in out.result.rounds] == [True] * cfg.rounds.rounds
    assert all(len(r.outcome.accepted) == 2 for r in out.result.rounds)  # both regions
    assert all(r.schedule is not None for r in out.result.rounds)
    got = _decisions(str(deployed))
    with Registry.open(deployed) as reg:
        history = reg.history()
    if straggler:
        mine = history.device_id == SLOW
        assert (history.status[mine] == WorkStatus.DROPPED).all()
        assert (history.status[~mine] == WorkStatus.COMPLETED).all()
    else:
        assert [len(got[r]) for r in range(2)] == [6, 6]  # ceil(5 x 1.2) of 8
        assert (history.status == WorkStatus.COMPLETED).all()  # every report came up
        sim_url = _profile_registry(tmp_path / "sim.db", dep, report)
        run(load_config(overrides=[*tree, f"scheduling.registry_url={sim_url}"]))
        want = _decisions(sim_url)
        assert got[0] == want[0]
        assert [c for c, _ in got[1]] == [c for c, _ in want[1]]
    replay = load_config(overrides=[*tree, f"scheduling.replay_url={deployed}"])
    assert out.result.params.tobytes() == run(replay).simulation.params.tobytes()


def test_the_tree_scheduler_decides_once_and_learns_from_the_edges_reports():
    """Without gRPC: the center's decision over the tree, then the edges' reports; a
    profile that arrives mid-round counts from the next decision (the round in flight
    is still learnt from)."""
    cfg = load_config(overrides=[*TREE, "scheduling.overselect=0.25"])
    dep = deployment(cfg)
    report = _profiles(dep)
    sched = tree_scheduler(cfg, dep.trainer.flops_per_example, dep.size, dep.num_clients)
    sched.join(6, {c: report(c) for c in range(5)})  # client 5 has not connected yet
    work = sched.start(0, 0.0, local_plan(cfg.client))
    assert 5 not in work.members
    assert len(work.members) == 5  # ceil(4 x 1.25) of the 5 profiled
    assert all(0 < s <= 5 for s in work.steps)
    sched.join(7, {5: report(5)})  # mid-round: no effect on the round in flight
    done = [
        MemberReport(c, "accepted", 8 * s, 0.01, 0.02, 0.01, 0.5, s, True)
        for c, s in zip(work.members, work.steps, strict=True)
    ]
    sched.reported(0, [*done[:-1], MemberReport(99, "accepted")])  # a stranger: ignored
    sched.reported(1, [MemberReport(work.members[-1], "accepted")])  # another round's
    stats = sched.observe(0, 1.0)
    assert stats is not None
    assert stats.partial == 0
    assert stats.predictor_mape_last is not None  # it learnt from the reports
    history = sched.scheduler.registry.history()  # type: ignore[union-attr]
    status = dict(zip(history.device_id.tolist(), history.status.tolist(), strict=True))
    assert status[work.members[-1]] == WorkStatus.FAILED  # no report came for it
    assert sum(s == WorkStatus.COMPLETED for s in status.values()) == 4
    sched.start(1, 2.0, local_plan(cfg.client))
    assert 5 in sched.scheduler.planner().predictor.state.device_id  # profiled now
    # an edge whose parent sends no scheduled cohort skips the round with the reason
    with pytest.raises(ProtocolError, match="no scheduled cohort"):
        EdgeFollower().assign(TaskSpec(TaskKind.TRAIN, 0, 0, local_plan(cfg.client)))


_times = st.floats(0, 1e6, allow_nan=False)
_member_reports = st.builds(
    MemberReport, st.integers(0, 2**40), st.sampled_from(["accepted", "late", "failed"]),
    st.integers(0, 2**40), _times, _times, _times,
    st.none() | st.floats(allow_nan=False, allow_infinity=False),
    st.none() | st.integers(0, 2**31), st.booleans(),
)  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 2**40), unique=True, max_size=20).flatmap(
        lambda ids: st.tuples(
            st.just(ids), st.lists(st.integers(0, 2**31), min_size=len(ids), max_size=len(ids))
        )
    ),
    st.lists(_member_reports, max_size=10),
)
def test_the_tree_wire_records_round_trip_exactly(cohort, reports):
    ids, steps = cohort
    work = TierWork(tuple(ids), tuple(steps))
    task = TaskSpec(TaskKind.TRAIN, 1, 2, LocalPlan(epochs=1), None, 0, "r", None, work)
    assert task_from_pb(task_to_pb(task)).work == work
    header = pb.StreamHeader(client_id=9)
    put_reports(header, reports)
    assert reports_from_pb(header, 9) == tuple(reports)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_the_edges_shares_partition_the_centers_cohort(data):
    """Whatever the center draws, its edges' shares (each edge's own clients in the
    center's cohort) are disjoint and cover it: every member trains at one edge."""
    cfg = load_config(overrides=TREE)
    spec = TreeSpec.of(cfg, 6)
    cohort = data.draw(st.lists(st.integers(0, 5), unique=True))
    shares = [spec.members(e, 0, cohort=cohort) for e in spec.edges]
    flat = [c for share in shares for c in share]
    assert sorted(flat) == sorted(cohort)
    assert len(flat) == len(set(flat))
    for e, share in zip(spec.edges, shares, strict=True):
        assert set(share) <= set(e.clients)


@pytest.mark.parametrize("cohort", [3, 4], ids=["cohort3", "cohort4"])
def test_a_scheduled_sample_runs_under_secure_aggregation_as_the_replay(tmp_path, cohort):
    """Scheduling with sampling under two-tier secure aggregation: the center's
    over-selected cohort is split across the edges, each edge runs its secure sum over
    its selected members (one alone sits out, as in the simulator), and the simulator
    replaying the record computes the deployment's model."""
    url = tmp_path / "devices.db"
    cfg = load_config(
        overrides=[
            *TREE, f"rounds.clients_per_round={cohort}", "scheduling.overselect=0.25",
            "secagg.enabled=true", "secagg.dropout_rate=0", f"scheduling.registry_url={url}",
        ]
    )  # fmt: skip
    check_supported(cfg)
    dep = deployment(cfg)
    out = asyncio.run(run_tree(dep, EDGES, profiles=_profiles(dep)))
    assert [r.outcome.round_idx for r in out.result.rounds] == [0, 1]
    assert all(r.schedule is not None for r in out.result.rounds)
    with Registry.open(url) as reg:
        h = reg.history()
    assert len(h) == 2 * math.ceil(cohort * 1.25)  # every invited member, each round
    replay = cfg.model_copy(
        update={"scheduling": cfg.scheduling.model_copy(
            update={"registry_url": None, "replay_url": str(url)}
        )}
    )  # fmt: skip
    assert out.result.params.tobytes() == run(replay).simulation.params.tobytes()
