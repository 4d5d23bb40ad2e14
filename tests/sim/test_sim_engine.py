import logging

import numpy as np
import pytest
from simfakes import FakeData, FakeFactory

from fedstrata.algorithms import FedAvg
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core import CodecId, LocalPlan, Payload
from fedstrata.pipeline import DenseCodec, Pipeline
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
    Simulation,
)


def make_sim(
    factory,
    workers,
    *,
    rounds=3,
    per_round=None,
    deadline=None,
    pipeline=None,
    data=None,
    dist=None,
):
    data = data or FakeData()
    job = ClientJob(trainer_factory=factory, data=data, root_seed=5, pipeline=pipeline)
    executor = InProcessExecutor(job, 4) if workers == 0 else ProcessExecutor(job, 4, workers)
    trainer = factory()
    sim = Simulation(
        settings=SimSettings(rounds, LocalPlan(lr=0.5), root_seed=5),
        coordinator=RoundCoordinator(RoundPolicy(per_round, 1, deadline, 5)),
        trainer=trainer,
        executor=executor,
        client_sizes=data.client_sizes(),
        test_data=data.client(0),
        profiles=ProfileTable.generate(
            data.num_clients, dist or ProfileDistribution(), np.random.default_rng(0)
        ),
        server_optimizer=FedAvg(),
        pipeline=pipeline,
    )
    return sim, executor, trainer.initial_params(1)


def run(factory, workers, **kw):
    sim, executor, params = make_sim(factory, workers, **kw)
    try:
        return sim.run(params)
    finally:
        executor.close()


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_bit_identical_for_any_worker_count(workers):
    ref = run(FakeFactory(), 0, per_round=7)
    got = run(FakeFactory(), workers, per_round=7)
    assert ref.params.tobytes() == got.params.tobytes()
    assert [m.accuracy for m in ref.rounds] == [m.accuracy for m in got.rounds]


def test_matches_a_hand_written_fedavg_loop():
    data = FakeData()
    result = run(FakeFactory(), 0, rounds=2)
    params = FakeFactory()().initial_params(1)
    trainer = FakeFactory()()
    from fedstrata.core import RoundContext

    for r in range(2):
        acc, total = np.zeros(4), 0.0
        for c in range(data.num_clients):
            out = np.zeros(4, np.float32)
            res = trainer.train(
                params, data.client(c), LocalPlan(lr=0.5), RoundContext(r, 5).for_client(c), out
            )
            acc += np.multiply(out, float(res.num_examples), dtype=np.float64)
            total += res.num_examples
        params = params + (acc / total).astype(np.float32)
    assert result.params.tobytes() == params.tobytes()


@pytest.mark.parametrize("workers", [0, 2])
def test_nan_and_crashing_clients_are_dropped_with_reason(workers, caplog):
    caplog.set_level(logging.WARNING)
    result = run(FakeFactory(nan_clients=(2,), raise_clients=(5,)), workers, rounds=2)
    for m in result.rounds:
        assert m.clients_failed == 2
        assert m.clients_completed == 10
    assert np.isfinite(result.params).all()
    text = caplog.text
    assert "client 2 dropped" in text
    assert "NaN/Inf" in text
    assert "client 5 dropped" in text
    assert "out of memory" in text


class TruncatingCodec(DenseCodec):
    """A client-side codec that sends one float too few for client 3."""

    def encode(self, vector, ctx):
        body = vector.astype("<f4").tobytes()
        if ctx.client_id == 3:
            body = body[:-4]
        return Payload(CodecId.DENSE_F32, b"", body)


@pytest.mark.parametrize("workers", [0, 2])
def test_wrong_shape_payload_is_dropped(workers, caplog):
    caplog.set_level(logging.WARNING)
    pipe = Pipeline([], TruncatingCodec(4))
    result = run(FakeFactory(), workers, rounds=1, pipeline=pipe)
    (m,) = result.rounds
    assert (m.clients_failed, m.clients_completed) == (1, 11)
    assert "client 3 dropped" in caplog.text
    assert "client 3 dropped: update shape (3,), expected (4,)" in caplog.text  # a vector's


def test_simulated_time_follows_profiles_and_deadline():
    slow = ProfileDistribution(flops_max=1e6, compute_spread=1000.0)
    result = run(FakeFactory(), 0, rounds=1, dist=slow)
    (m,) = result.rounds
    assert m.sim_round_s == pytest.approx(m.downlink_s + m.compute_s + m.uplink_s)
    assert m.compute_s > 1.0  # 1e6 FLOP/example on <= 1e6 FLOP/s devices
    deadline = m.sim_round_s / 2
    limited = run(FakeFactory(), 0, rounds=1, dist=slow, deadline=deadline)
    (d,) = limited.rounds
    assert d.sim_round_s == pytest.approx(deadline)
    assert d.clients_late > 0
    assert d.clients_completed + d.clients_late == 12
    assert m.bytes_up == 12 * (24 + 16)
    assert m.bytes_down == 12 * (24 + 16)


def test_worker_pool_survives_killed_workers():
    sim, executor, params = make_sim(FakeFactory(), 2, rounds=3)

    def kill_workers_after_round_0(metrics):
        if metrics.round_idx == 0:
            for proc in executor._procs:
                proc.kill()
                proc.join()

    sim.on_round = kill_workers_after_round_0
    try:
        result = sim.run(params)
    finally:
        executor.close()
    first, second, third = result.rounds
    assert first.clients_completed == 12
    assert second.clients_failed > 0  # the dead workers' clients in flight
    assert second.clients_completed + second.clients_failed == 12
    assert third.clients_completed == 12
