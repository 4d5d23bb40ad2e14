"""The heterogeneity-aware planner and selector wired into the simulator."""

import numpy as np
import pytest
from simfakes import FakeData, FakeFactory

from fedstrata.aggregation import WeightedMean
from fedstrata.algorithms import FedAvg
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core import LocalPlan
from fedstrata.core.payload import HEADER_SIZE
from fedstrata.errors import ConfigError, DataError
from fedstrata.scheduling import (
    DeviceProfiles,
    OortConfig,
    OortSelector,
    RandomSelector,
    Registry,
    TimePredictor,
    WorkStatus,
)
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
    Simulation,
)
from fedstrata.sim.scheduled import (
    ScheduledPlanner,
    ScheduledSelector,
    ScheduleSettings,
    SettlementWeighted,
    profile_table,
    registry_profiles,
    start_from_registry,
)

N = 40
FPE = 1e6  # FakeTrainer.flops_per_example
MODEL_BYTES = HEADER_SIZE + 16
DIST = ProfileDistribution(flops_max=1e7, compute_spread=1000.0, latency_ms=1.0)


def table(seed=0, n=N):
    return ProfileTable.generate(n, DIST, np.random.default_rng(seed))


def make_planner(settings, devices=None, *, advertised=None, registry=None, selector=None):
    devices = devices or table()
    data = FakeData(N)
    profiles = registry_profiles(advertised or devices)
    predictor = TimePredictor.from_profiles(profiles, FPE)
    return ScheduledPlanner(
        settings,
        predictor,
        profiles,
        devices,
        data.client_sizes(),
        flops_per_example=FPE,
        down_bytes=MODEL_BYTES,
        up_bytes=MODEL_BYTES,
        registry=registry,
        selector=selector,
    )


def run_sim(planner, *, deadline, per_round=10, rounds=3, selector=None, workers=0):
    data = FakeData(N)
    job = ClientJob(trainer_factory=FakeFactory(), data=data, root_seed=3)
    executor = InProcessExecutor(job, 4)
    sim = Simulation(
        settings=SimSettings(rounds, LocalPlan(lr=0.5), root_seed=3),
        coordinator=RoundCoordinator(RoundPolicy(per_round, 1, deadline, 3), selector=selector),
        trainer=FakeFactory()(),
        executor=executor,
        client_sizes=data.client_sizes(),
        test_data=data.client(0),
        profiles=planner.devices,
        server_optimizer=FedAvg(),
        aggregator=SettlementWeighted(WeightedMean(), planner),
        planner=planner,
    )
    return sim.run(FakeFactory()().initial_params(1))


def test_slow_devices_get_fewer_steps_and_predicted_finish_meets_the_deadline():
    planner = make_planner(ScheduleSettings(deadline_s=200.0, max_steps=10_000))
    cohort = np.arange(N, dtype=np.int64)
    ok = planner.feasible(cohort, 8)
    cohort = cohort[ok]
    plans = planner.plans(0, cohort, LocalPlan(lr=0.5))
    steps = np.array([p.steps for p in plans])
    seconds_per_step = planner.per_step(cohort, 8) * FPE / planner.devices.flops[cohort]
    order = np.argsort(seconds_per_step)
    assert (np.diff(steps[order]) <= 0).all()  # slower -> never more steps
    assert steps[order[0]] > 10 * steps[order[-1]]
    finish = planner.predicted_finish(cohort, steps, 8)
    assert (finish <= 200.0).all()
    assert (finish >= 200.0 - seconds_per_step - 1e-9).all()  # within one step of the target


def test_utilization_extras_present_and_above_the_equal_work_baseline():
    base = run_sim(make_planner(ScheduleSettings(allocation=False)), deadline=None)
    ours = run_sim(make_planner(ScheduleSettings(deadline_s=200.0)), deadline=200.0)
    for m in [*base.rounds, *ours.rounds]:
        assert m.schedule is not None
        assert m.schedule.predictor_mape_last is not None
    u_base = np.mean([m.schedule.mean_utilization for m in base.rounds])
    u_ours = np.mean([m.schedule.mean_utilization for m in ours.rounds])
    assert u_ours >= u_base
    assert u_ours > 0.9
    tp_base = np.mean([m.schedule.throughput_eps for m in base.rounds])
    tp_ours = np.mean([m.schedule.throughput_eps for m in ours.rounds])
    assert tp_ours > tp_base
    assert all(m.sim_round_s <= 200.0 for m in ours.rounds)


def test_registry_gets_one_history_row_per_cohort_member_per_round(tmp_path):
    devices = table()
    with Registry.open(tmp_path / "devices.db") as reg:
        reg.upsert_devices(registry_profiles(devices))
        planner = make_planner(ScheduleSettings(deadline_s=200.0), devices, registry=reg)
        result = run_sim(planner, deadline=200.0, rounds=3, per_round=10)
        hist = reg.history()
        assert len(hist) == sum(m.clients_selected for m in result.rounds) == 30
        pairs = set(zip(hist.device_id.tolist(), hist.round_idx.tolist(), strict=True))
        assert len(pairs) == 30
        assert sorted(set(hist.round_idx.tolist())) == [0, 1, 2]
        done = hist.status <= WorkStatus.PARTIAL
        assert (hist.completed_work[done] >= 1).all()
        assert np.isfinite(hist.actual_s[done]).all()
        assert np.isfinite(reg.avg_train_time(hist.device_id[done])).all()
        # a new simulation starts from this registry, its predictor warmed by the history
        table2, profiles2, pred = start_from_registry(reg, FPE)
        assert np.allclose(table2.flops, devices.flops)
        assert pred.error.observations == int(done.sum())
        assert len(profiles2) == N


def test_partial_work_at_the_deadline_is_accepted_with_its_fraction():
    devices = table()
    optimistic = ProfileTable(
        devices.flops * 3.0,  # the registry believes every device is 3x faster than it is
        devices.memory_gb,
        devices.uplink_bps,
        devices.downlink_bps,
        devices.latency_s,
        devices.availability,
    )
    planner = make_planner(ScheduleSettings(deadline_s=200.0), devices, advertised=optimistic)
    cohort = np.arange(N, dtype=np.int64)[planner.feasible(np.arange(N), 8)]
    plans = planner.plans(0, cohort, LocalPlan(lr=0.5))
    factors = np.array([planner.weight_factor(int(c)) for c in cohort])
    assert (factors < 1).any()
    assert ((factors > 0) & (factors <= 1)).all()
    down, spe, up = planner._true_legs(cohort)
    per = planner.per_step(cohort, 8)
    arrival = down + up + np.array([p.steps for p in plans]) * per * spe
    partial = factors < 1
    assert (arrival[partial] <= 200.0).all()
    result = run_sim(planner, deadline=200.0)
    assert sum(m.schedule.partial for m in result.rounds) > 0
    assert all(m.clients_late == m.schedule.dropped for m in result.rounds)


def test_true_stragglers_are_dropped_as_late():
    planner = make_planner(ScheduleSettings(deadline_s=100.0))
    # the default coordinator (no feasibility filter) invites devices too slow for one step
    result = run_sim(planner, deadline=100.0, per_round=N, rounds=1)
    (m,) = result.rounds
    slow = planner.devices.flops < 3 * FPE / 100.0
    assert slow.any()
    assert m.clients_late >= 1
    assert m.schedule.dropped == m.clients_late
    assert m.sim_round_s == pytest.approx(100.0)


@pytest.mark.parametrize("inner", ["oort", "random"])
def test_selector_through_the_coordinator_gets_feedback(inner):
    oort = OortSelector(N, OortConfig(epsilon=0.5))
    selector_impl = oort if inner == "oort" else RandomSelector()
    planner = make_planner(ScheduleSettings(deadline_s=200.0), selector=selector_impl)
    selector = ScheduledSelector(selector_impl, planner, batch_size=8, overselect_rate=0.2)
    result = run_sim(planner, deadline=200.0, per_round=8, rounds=4, selector=selector)
    ok = planner.feasible(np.arange(N), 8)
    for m in result.rounds:
        assert m.clients_selected == min(10, int(ok.sum()))  # ceil(8 * 1.2)
        assert m.clients_late == 0
    if inner == "oort":
        seen = oort.state.last_round >= 0
        assert seen.sum() >= 10
        assert not (seen & ~ok).any()  # never invites infeasible devices
        assert np.isfinite(oort.state.duration_s[seen]).all()
        assert len(oort.state.round_utility) == 4


def test_profiles_round_trip_through_registry_rows():
    t = table(5)
    back = profile_table(registry_profiles(t))
    for name in ("flops", "memory_gb", "uplink_bps", "downlink_bps", "latency_s"):
        assert np.allclose(getattr(back, name), getattr(t, name))
    rows = registry_profiles(t)
    shuffled = rows.take(np.arange(N)[::-1])
    assert np.allclose(profile_table(shuffled).flops, t.flops)
    gappy = DeviceProfiles(np.array([0, 2]), 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(DataError, match=r"0 \.\. n-1"):
        profile_table(gappy)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"deadline_s": -1.0}, "deadline_s"),
        ({"allocation": True}, "allocation"),
        ({"deadline_s": 1.0, "min_steps": 0}, "min_steps"),
        ({"deadline_s": 1.0, "min_steps": 4, "max_steps": 2}, "max_steps"),
        ({"deadline_s": 1.0, "safety": 1.0}, "safety"),
    ],
)
def test_settings_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ScheduleSettings(**kwargs)


def test_planner_rejects_mismatched_sizes():
    devices = table()
    profiles = registry_profiles(devices)
    with pytest.raises(DataError, match="client sizes"):
        ScheduledPlanner(
            ScheduleSettings(allocation=False),
            TimePredictor.from_profiles(profiles, FPE),
            profiles,
            devices,
            np.ones(3, dtype=np.int64),
            flops_per_example=FPE,
            down_bytes=1,
            up_bytes=1,
        )
