"""Issue 12 part 4: FedBuff composes with robust aggregators and uplink/downlink compression.

End to end through ``fedstrata.api.run`` (config -> run -> recorded metrics) on a small
digits federation, plus the poisoned-client invariant on the discrete-event loop.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from simfakes import FakeData, FakeFactory, FakeTrainer

from fedstrata.aggregation import CoordinateMedian
from fedstrata.algorithms import FedAvg
from fedstrata.api import RunResult, run
from fedstrata.config import FedConfig, load_config
from fedstrata.core import HEADER_SIZE, LocalPlan, TrainResult
from fedstrata.errors import ConfigError
from fedstrata.scheduling import FedBuffConfig, FedBuffServer
from fedstrata.sim import ClientJob, InProcessExecutor, ProfileDistribution, ProfileTable
from fedstrata.sim.async_engine import AsyncSettings, AsyncSimulation

DIGITS_PARAMS = 64 * 10 + 10  # logreg on 8x8 digits
DENSE = HEADER_SIZE + 4 * DIGITS_PARAMS


def make_config(*extra: str) -> FedConfig:
    return load_config(
        overrides=[
            "data.name=digits",
            "data.partition=iid",
            "data.num_clients=20",
            "model.kind=logreg",
            "model.init_seed=3",
            "client.epochs=null",
            "client.steps=2",
            "client.lr=0.1",
            "scheduling.async.enabled=true",
            "scheduling.async.concurrency=6",
            "scheduling.async.buffer_size=3",
            "scheduling.async.server_updates=6",
            "rounds.eval_every=3",
            "sim.workers=0",
            "output.run_store=false",
            "output.progress=false",
            *extra,
        ]
    )


@cache
def run_with(*extra: str) -> RunResult:
    return run(make_config(*extra))


def total(result: RunResult, field: str) -> int:
    return sum(getattr(m, field) for m in result.simulation.rounds)


def test_uplink_compression_sends_codec_payloads_decoded_into_the_buffer() -> None:
    dense = run_with()
    int8 = run_with("compression.quantize=8", "compression.error_feedback=true")
    assert len(int8.simulation.rounds) == 6
    assert total(int8, "bytes_up") < total(dense, "bytes_up") / 3
    for m in int8.simulation.rounds:
        assert m.codec.uplink_ratio > 3
        assert m.codec.uplink_bytes_per_client < DENSE / 3
    assert all(m.codec.uplink_ratio == 1.0 for m in dense.simulation.rounds)
    acc_dense, acc_int8 = dense.simulation.final_accuracy, int8.simulation.final_accuracy
    assert acc_dense is not None
    assert acc_int8 is not None
    assert acc_int8 > acc_dense - 0.1  # the decoded updates train the model


def test_downlink_compression_sends_each_client_deltas_from_the_version_it_holds() -> None:
    """8 clients, ~27 dispatches: a client's first download is the full model, its
    later ones the int8 deltas of each version it missed (~a quarter of the model each)."""
    few = ("data.num_clients=8", "rounds.clients_per_round=4", "scheduling.async.concurrency=4",
           "scheduling.async.buffer_size=4", "scheduling.async.server_updates=6")  # fmt: skip
    dense = run_with(*few)
    down = run_with(*few, "downlink.quantize=8")
    assert total(down, "bytes_down") < 0.7 * total(dense, "bytes_down")
    later = down.simulation.rounds[1:]  # by then most clients hold some version
    assert all(m.codec.downlink_bytes_per_client < 0.7 * DENSE for m in later)
    assert all(m.codec.downlink_bytes_per_client == DENSE for m in dense.simulation.rounds)
    assert down.simulation.final_accuracy is not None


def test_a_robust_aggregator_changes_the_async_run() -> None:
    mean, median = run_with(), run_with("server.aggregator=median")
    assert not np.array_equal(mean.simulation.params, median.simulation.params)
    assert len(median.simulation.rounds) == 6


def _median_rule(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.median(vectors, axis=0).astype(np.float32)


def test_your_aggregator_runs_over_each_server_steps_buffer() -> None:
    """A rule passed to api.run sees the buffered updates: it matches the built-in median."""
    ours = run(make_config(), aggregator=_median_rule)
    builtin = run_with("server.aggregator=median")
    np.testing.assert_allclose(ours.simulation.params, builtin.simulation.params, atol=1e-6)


class PoisonTrainer(FakeTrainer):
    """Client 0 sends a huge update; everyone else trains like the fake."""

    def train(self, params, data, plan, ctx, out) -> TrainResult:
        result = super().train(params, data, plan, ctx, out)
        if ctx.client_id == 0:
            out[:] = np.float32(1e6)
        return result


class PoisonFactory(FakeFactory):
    def __call__(self) -> FakeTrainer:
        return PoisonTrainer()


def poisoned_run(aggregator) -> np.ndarray:
    n = 6
    data = FakeData(n)
    job = ClientJob(trainer_factory=PoisonFactory(), data=data, root_seed=1)
    dist = ProfileDistribution(flops_max=1e7, compute_spread=1.0, latency_ms=1.0)
    sim = AsyncSimulation(
        settings=AsyncSettings(4, n, LocalPlan(lr=0.5), root_seed=1),
        server=FedBuffServer(4, FedBuffConfig(buffer_size=n), aggregator=aggregator),
        trainer=FakeFactory()(),
        executor=InProcessExecutor(job, 4),
        client_sizes=data.client_sizes(),
        test_data=data.client(1),
        profiles=ProfileTable.generate(n, dist, np.random.default_rng(0)),
        server_optimizer=FedAvg(),
    )
    start = FakeFactory()().initial_params(1)
    return sim.run(start).params - start


def test_a_poisoned_clients_update_is_suppressed_by_median_but_not_by_mean() -> None:
    """Every buffer of 6 holds the poisoned client's update (all 6 clients train)."""
    assert np.abs(poisoned_run(None)).max() > 1e5
    assert np.abs(poisoned_run(CoordinateMedian())).max() < 50


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("privacy.mechanism=central", "Poisson-subsampled rounds"),
        ("secagg.enabled=true", "agrees keys"),
        ("scheduling.selector=oort", "one idle client at a time"),
        ("scheduling.overselect=0.2", "no cohort to over-select"),
        ("rounds.deadline_s=10", "no rounds to close"),
    ],
)
def test_async_refuses_what_it_cannot_honour(extra: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make_config(extra)


def test_async_refuses_allocation() -> None:
    with pytest.raises(ConfigError, match="FedBuff has no rounds"):
        make_config("scheduling.allocation=true", "rounds.deadline_s=10")


def test_each_server_step_records_its_devices_and_links() -> None:
    """Issue 16 part 1: a FedBuff step's devices are the clients that reported in it."""
    from fedstrata.monitoring.catalogue import federation_metrics

    rounds = run_with().simulation.rounds
    for m, row in zip(rounds, federation_metrics(rounds), strict=True):
        assert m.system is not None
        reported = m.clients_completed + m.clients_failed + m.clients_late
        assert reported <= m.system.devices <= reported + 6  # and those in flight
        assert row["completion_rate"] is not None
        assert row["device_utilization"] is not None
        assert 0.0 <= row["device_utilization"] <= 1.0  # a tiny model: mostly transfers
        assert row["bandwidth_utilization"] is not None
        assert 0.0 < row["bandwidth_utilization"] <= 1.0
        assert row["sync_share"] is None  # no critical path: clients overlap the steps
    assert sum(m.system.busy_s for m in rounds if m.system is not None) > 0
