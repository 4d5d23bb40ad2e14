"""Buffered asynchronous simulation (FedBuff on the discrete-event loop)."""

import numpy as np
import pytest
from simfakes import FakeData, FakeFactory

from fedstrata.algorithms import FedAvg
from fedstrata.core import LocalPlan
from fedstrata.errors import ConfigError
from fedstrata.scheduling import FedBuffConfig, FedBuffServer, staleness_weight
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProcessExecutor,
    ProfileDistribution,
    ProfileTable,
)
from fedstrata.sim.async_engine import AsyncSettings, AsyncSimulation

N = 12
DIST = ProfileDistribution(flops_max=1e7, compute_spread=100.0, latency_ms=1.0)


class Recorder:
    """A FedBuffServer that remembers every update the coordinator had it fold."""

    def __init__(self, server):
        self.inner, self.calls = server, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def fold(self, client_id, delta, weight, staleness, scale):
        buffered = self.inner.fold(client_id, delta, weight, staleness, scale)
        base_version = self.inner.version - staleness
        self.calls.append((client_id, delta.copy(), self.inner.version, base_version, weight))
        return buffered


def make(
    workers=0, *, updates=5, concurrency=6, k=3, max_staleness=100, server=None, factory=None
):
    data = FakeData(N)
    job = ClientJob(trainer_factory=factory or FakeFactory(), data=data, root_seed=7)
    executor = InProcessExecutor(job, 4) if workers == 0 else ProcessExecutor(job, 4, workers)
    server = server or FedBuffServer(4, FedBuffConfig(buffer_size=k, max_staleness=max_staleness))
    sim = AsyncSimulation(
        settings=AsyncSettings(updates, concurrency, LocalPlan(lr=0.5), root_seed=7),
        server=server,
        trainer=FakeFactory()(),
        executor=executor,
        client_sizes=data.client_sizes(),
        test_data=data.client(0),
        profiles=ProfileTable.generate(N, DIST, np.random.default_rng(0)),
        server_optimizer=FedAvg(),
    )
    return sim, executor


def run(workers=0, **kw):
    sim, executor = make(workers, **kw)
    try:
        return sim.run(FakeFactory()().initial_params(1)), sim
    finally:
        executor.close()


def test_stops_after_the_configured_number_of_server_updates():
    result, sim = run(updates=7)
    assert len(result.rounds) == 7
    assert sim.server.version == 7
    assert [m.round_idx for m in result.rounds] == list(range(7))
    times = [m.sim_time_s for m in result.rounds]
    assert times == sorted(times)
    assert result.sim_time_s == pytest.approx(times[-1])
    assert all(m.accuracy is not None for m in result.rounds)


def test_every_k_accepted_arrivals_apply_a_staleness_weighted_step():
    rec = Recorder(FedBuffServer(4, FedBuffConfig(buffer_size=3)))
    sim, executor = make(updates=6, concurrency=6, k=3, server=rec)
    start = FakeFactory()().initial_params(1)
    try:
        result = sim.run(start)
    finally:
        executor.close()
    assert all(m.clients_completed == 3 for m in result.rounds)
    assert len(rec.calls) == 18
    params = start.copy()
    stale_seen = 0
    for step in range(6):
        batch = rec.calls[3 * step : 3 * step + 3]
        version = step  # server version while this buffer filled
        acc = np.zeros(4, np.float32)
        for _, delta, _, base, weight in batch:
            tau = version - base
            stale_seen += tau > 0
            factor = float(staleness_weight(tau)) * weight
            acc += np.float32(factor) * delta
        total = sum(c[4] for c in batch)
        params = params + (acc / np.float32(total)) * np.float32(1.0)
    assert stale_seen > 0  # concurrency > K makes some updates stale
    assert np.allclose(result.params, params, atol=1e-6)
    mean_tau = [m.fedbuff.staleness_mean for m in result.rounds]
    assert max(mean_tau) > 0


def test_bit_identical_for_workers_0_and_1():
    ref, _ = run(0, updates=6)
    got, _ = run(1, updates=6)
    assert ref.params.tobytes() == got.params.tobytes()
    assert [m.sim_time_s for m in ref.rounds] == [m.sim_time_s for m in got.rounds]
    assert [m.accuracy for m in ref.rounds] == [m.accuracy for m in got.rounds]


def test_fast_clients_return_more_often_and_clients_never_overlap():
    rec = Recorder(FedBuffServer(4, FedBuffConfig(buffer_size=2)))
    sim, executor = make(updates=20, concurrency=4, k=2, server=rec)
    try:
        sim.run(FakeFactory()().initial_params(1))
    finally:
        executor.close()
    counts = np.bincount([c[0] for c in rec.calls], minlength=N)
    speed = sim.profiles.flops / sim.client_sizes
    fast, slow = np.argsort(speed)[-3:], np.argsort(speed)[:3]
    assert counts[fast].sum() > counts[slow].sum()


def test_too_stale_updates_are_rejected_and_counted():
    result, _ = run(updates=4, concurrency=8, k=2, max_staleness=0)
    assert sum(m.clients_late for m in result.rounds) > 0
    for m in result.rounds:
        assert m.clients_completed == 2
        assert m.clients_completed + m.clients_late + m.clients_failed == m.clients_selected


def test_crashing_clients_are_counted_as_failed():
    data = FakeData(N)
    factory = FakeFactory(raise_clients=(5, 9), nan_clients=(4,))  # the fastest
    job = ClientJob(trainer_factory=factory, data=data, root_seed=7)
    sim = AsyncSimulation(
        settings=AsyncSettings(5, 6, LocalPlan(lr=0.5)),
        server=FedBuffServer(4, FedBuffConfig(buffer_size=2)),
        trainer=factory(),
        executor=InProcessExecutor(job, 4),
        client_sizes=data.client_sizes(),
        test_data=None,
        profiles=ProfileTable.generate(N, DIST, np.random.default_rng(0)),
        server_optimizer=FedAvg(),
    )
    result = sim.run(factory().initial_params(1))
    assert len(result.rounds) == 5
    assert sum(m.clients_failed for m in result.rounds) > 0
    assert np.isfinite(result.params).all()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"server_updates": 0, "concurrency": 1}, "server_updates"),
        ({"server_updates": 1, "concurrency": 0}, "concurrency"),
        ({"server_updates": 1, "concurrency": 1, "eval_every": 0}, "eval_every"),
    ],
)
def test_settings_validation(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        AsyncSettings(plan=LocalPlan(), **kwargs)


def test_concurrency_above_the_population_is_refused():
    with pytest.raises(ConfigError, match="concurrency"):
        make(concurrency=N + 1)


def test_failing_clients_make_one_warning_per_server_step(caplog):
    """Issue 11 defect 21 (async): failures are summed up once per server step."""
    import logging

    caplog.set_level(logging.INFO, logger="fedstrata.sim.async_engine")
    sim, _ = make(updates=3, factory=FakeFactory(nan_clients=tuple(range(0, N, 2))))
    sim.run(FakeFactory()().initial_params(1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "failed" in r.getMessage()]
    assert warnings, "no summary"
    assert len(warnings) <= 3, warnings
    assert all(w.startswith("server step ") and "NaN/Inf" in w for w in warnings), warnings
    assert all(w.endswith("lower client.lr)") for w in warnings), warnings
    assert len(infos) > len(warnings)


def test_the_coordinator_keeps_concurrency_clients_in_flight():
    """The round engine's buffered policy dispatches: a step sees the other
    ``concurrency - 1`` clients in flight, and every freed slot is refilled."""
    result, sim = run(updates=5, concurrency=6, k=3)
    assert all(m.fedbuff.in_flight == 5 for m in result.rounds)
    assert len(sim.coordinator.in_flight) == 6
    assert sim.coordinator.round_idx == sim.server.version == 5
