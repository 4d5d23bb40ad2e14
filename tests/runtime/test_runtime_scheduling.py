"""Scheduling in deployment (issue 13 part 4): clients fill the center's registry, the
center sizes their work to the deadline with the simulator's planner, over-selects and
selects by Oort when configured."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from rthelpers import SMALL, tokens_for
from sqlalchemy import create_engine, make_url, text

from fedstrata.builders import local_plan
from fedstrata.config import load_config
from fedstrata.errors import DataError, ProtocolError
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, deployment
from fedstrata.runtime.pbconv import profile_from_pb, profile_to_pb
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.runtime.scheduling import DeviceReport
from fedstrata.scheduling import DeviceProfiles, Registry, TimePredictor, WorkStatus
from fedstrata.scheduling.planner import ScheduleSettings, WorkPlanner


def _reports(dep, deadline_s: float):
    """Clients 0-2 do about 8 steps by the deadline, 3-5 ten times more (reported
    GFLOP/s, as a device bench would); each reports its real local examples."""
    cfg = dep.config
    step_flops = cfg.client.batch_size * dep.trainer.flops_per_example
    slow = 8 * step_flops / deadline_s / 1e9

    def report(cid: int) -> DeviceReport:
        gflops = slow if cid < 3 else 10 * slow
        n = len(dep.local_data(cid))
        return DeviceReport(gflops, 4.0, 5.0, 100.0, 100.0, local_examples=n)

    return report


async def _federation(dep, profiles=None):
    n = dep.num_clients
    tokens = tokens_for(n)
    center = dep.center()
    async with CenterServer(center, TokenTable(tokens)) as server:

        async def one(cid):
            async with GrpcLink(server.target, cid, tokens[cid]) as link:
                profile = None if profiles is None else profiles(cid)
                return await dep.client(link, cid, profile=profile).run()

        async with asyncio.TaskGroup() as tg:
            main = tg.create_task(center.run(dep.initial_params()))
            for cid in range(n):
                tg.create_task(one(cid))
    return main.result(), center


PG_URL = os.environ.get("FEDSTRATA_TEST_PG_URL")
PG_SKIP = "set FEDSTRATA_TEST_PG_URL=postgresql+psycopg://USER@HOST:PORT/DB to test PostgreSQL"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason=PG_SKIP)],
        ),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """The center's registry: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "devices.db")
        return
    assert PG_URL is not None
    name = f"fedstrata_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _config(url, *extra):
    return load_config(overrides=[*SMALL, f"scheduling.registry_url={url}", *extra])


def test_clients_fill_the_registry_with_profiles_and_round_timings(db_url):
    cfg = _config(
        db_url, "scheduling.allocation=true", "rounds.deadline_s=60", "scheduling.max_steps=4"
    )
    result, _ = asyncio.run(_federation(deployment(cfg)))
    assert [len(r.outcome.accepted) for r in result.rounds] == [5, 5]
    with Registry.open(db_url) as reg:
        devices = reg.devices()
        history = reg.history()
    assert sorted(devices.device_id.tolist()) == list(range(6))
    assert (devices.cpu_score > 0).all()  # measured at start-up (device bench)
    assert len(history) == 10  # one row per cohort member per round
    assert set(history.round_idx.tolist()) == {0, 1}
    assert (history.status == WorkStatus.COMPLETED).all()
    assert (history.completed_work == history.assigned_work).all()
    assert np.isfinite(history.actual_s).all()
    assert (history.actual_s > 0).all()
    assert all(r.schedule is not None for r in result.rounds)


def test_under_secure_aggregation_round_timings_reach_the_registry(tmp_path):
    """The masked input's header carries the client's measured round (INPUT step), so
    the scheduler learns from secure rounds too: without it every member is 'failed'."""
    cfg = _config(
        tmp_path / "devices.db", "scheduling.allocation=true", "rounds.deadline_s=60",
        "scheduling.max_steps=3", "secagg.enabled=true", "secagg.dropout_rate=0",
    )  # fmt: skip
    result, center = asyncio.run(_federation(deployment(cfg)))
    assert center.secure is not None
    assert [len(r.outcome.accepted) for r in result.rounds] == [5, 5]
    with Registry.open(tmp_path / "devices.db") as reg:
        history = reg.history()
    assert len(history) == 10
    assert (history.status == WorkStatus.COMPLETED).all()
    assert (history.completed_work == history.assigned_work).all()
    assert (history.actual_s > 0).all()
    assert all(r.schedule is not None for r in result.rounds)
    assert center.scheduler is not None
    assert center.scheduler.stats[-1].predictor_mape_last is not None  # it learnt


def test_allocation_sizes_each_clients_work_like_the_simulators_planner(tmp_path):
    deadline = 20.0
    cfg = _config(
        tmp_path / "devices.db", "scheduling.allocation=true", f"rounds.deadline_s={deadline}",
        "rounds.rounds=1", "scheduling.max_steps=50",
    )  # fmt: skip
    dep = deployment(cfg)
    report = _reports(dep, deadline)
    result, _ = asyncio.run(_federation(dep, report))
    with Registry.open(tmp_path / "devices.db") as reg:
        history = reg.history(until_round=0)
    cohort = history.device_id
    assert sorted(cohort.tolist()) == sorted(result.rounds[0].outcome.accepted)
    per = history.assigned_work  # examples: steps x batch
    slow, fast = per[cohort < 3], per[cohort >= 3]
    assert slow.size
    assert fast.size
    assert fast.min() > 3 * slow.max()  # the fast devices get more work
    # the simulator's planner, with the same profiles, sizes the same work
    ids = np.arange(6)
    profiles = [report(int(c)).profiles(int(c)) for c in ids]
    cols = [np.concatenate([getattr(p, c) for p in profiles]) for c in (
        "cpu_score", "memory_gb", "network_latency_ms", "uplink_mbps", "downlink_mbps",
        "availability", "bf16_speedup", "fp16_speedup",
    )]  # fmt: skip
    table = DeviceProfiles(ids, *cols)
    flops = dep.trainer.flops_per_example
    s = cfg.scheduling
    planner = WorkPlanner(
        ScheduleSettings(deadline, True, s.min_steps, s.max_steps, s.safety,
                         batch_size=cfg.client.batch_size),
        TimePredictor.from_profiles(table, flops), table,
        np.array([len(dep.local_data(int(c))) for c in ids]),
        flops_per_example=flops, down_bytes=4 * dep.size + 24, up_bytes=4 * dep.size + 24,
    )  # fmt: skip
    plans = planner.plans(0, cohort, local_plan(cfg.client))
    want = np.array([p.steps for p in plans]) * planner.per_step(cohort, cfg.client.batch_size)
    assert per.tolist() == want.tolist()


def test_oort_with_overselection_invites_more_clients(tmp_path):
    cfg = _config(
        tmp_path / "devices.db", "scheduling.selector=oort", "scheduling.overselect=0.5",
        "rounds.clients_per_round=2",
    )  # fmt: skip
    result, _ = asyncio.run(_federation(deployment(cfg)))
    assert [r.outcome.selected for r in result.rounds] == [3, 3]  # ceil(2 x 1.5)


def test_a_bad_profile_is_refused_with_its_reason():
    hello = pb.Hello(client_id=3)
    good = DeviceReport(1.5, 4.0, 5.0, 100.0, 100.0, local_examples=20)
    hello.profile.CopyFrom(profile_to_pb(good))
    assert profile_from_pb(hello) == good
    hello.profile.cpu_score = -1.0
    with pytest.raises(ProtocolError, match="cpu_score"):
        profile_from_pb(hello)
    with pytest.raises(DataError):
        DeviceReport(1.0, 1.0, 1.0, 1.0, 1.0, local_examples=-2)


@pytest.mark.parametrize(
    "secure", [[], ["secagg.enabled=true", "secagg.dropout_rate=0"]], ids=["plain", "secagg"]
)
def test_tiers_schedule_their_own_clients_into_the_shared_registry(tmp_path, secure):
    """Each tier's scheduler sizes its clients' work to the deadline and writes their
    profiles and history to the registry the configuration names; under two-tier
    secure aggregation too (the timings ride on the masked inputs to the edges)."""
    cfg = _config(
        tmp_path / "devices.db", "scheduling.allocation=true", "rounds.deadline_s=60",
        "scheduling.max_steps=3", "rounds.clients_per_round=null", *secure,
    )  # fmt: skip
    dep = deployment(cfg)
    n = dep.num_clients
    tokens = tokens_for(n + 2)
    split = [[0, 1, 2], [3, 4, 5]]

    async def main():
        center = dep.center(participants=2)
        async with CenterServer(center, TokenTable(tokens)) as top:
            edges = [dep.edge(3), dep.edge(3)]
            async with (
                CenterServer(edges[0], TokenTable(tokens)) as s0,
                CenterServer(edges[1], TokenTable(tokens)) as s1,
            ):
                targets = [s0.target, s1.target]

                async def tier(k):
                    async with GrpcLink(top.target, n + k, tokens[n + k]) as link:
                        return await dep.tier(link, edges[k]).run()

                async def client(cid, k):
                    async with GrpcLink(targets[k], cid, tokens[cid]) as link:
                        return await dep.client(link, cid).run()

                async with asyncio.TaskGroup() as tg:
                    run = tg.create_task(center.run(dep.initial_params()))
                    tiers = [tg.create_task(tier(k)) for k in range(2)]
                    for k, group in enumerate(split):
                        for cid in group:
                            tg.create_task(client(cid, k))
        return run.result(), [t.result() for t in tiers]

    result, tiers = asyncio.run(main())
    assert [len(r.outcome.accepted) for r in result.rounds] == [2, 2]
    with Registry.open(tmp_path / "devices.db") as reg:
        assert sorted(reg.devices().device_id.tolist()) == list(range(6))
        history = reg.history()
    assert len(history) == 12  # 6 clients x 2 rounds, written by the two tiers
    assert (history.assigned_work <= 3 * cfg.client.batch_size).all()  # max_steps
    assert (history.status == WorkStatus.COMPLETED).all()  # every member's timings came
    assert (history.actual_s > 0).all()
    assert all(r.schedule is not None for t in tiers for r in t.rounds)
