"""Issue 12 part 1: FedBuff takes its round rules from the shared round logic.

The FedBuff driver validates, drops, weights, decodes, times, evaluates and reports
through the functions the flat and tree drivers use. Its figures are pinned to those
recorded before it did (a drift in any of those rules changes them), and what it now
shares shows up in its records: failures as ``ClientFailure`` events, the codec's
decode and encode seconds.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from simfakes import FakeData, FakeFactory

from fedstrata.algorithms import FedAvg
from fedstrata.api import RunResult, run
from fedstrata.config import load_config
from fedstrata.core import LocalPlan
from fedstrata.monitoring import ClientFailure, MemorySink, RoundMetrics
from fedstrata.scheduling import FedBuffConfig, FedBuffServer
from fedstrata.sim import ClientJob, InProcessExecutor, ProfileDistribution, ProfileTable
from fedstrata.sim.async_engine import AsyncSettings, AsyncSimulation

ALL_ON = (
    "compression.quantize=8",
    "compression.error_feedback=true",
    "downlink.quantize=8",
    "devices.dropout_rate=0.3",
    "server.aggregator=median",
)


@cache
def fedbuff_run(*extra: str) -> RunResult:
    return run(
        load_config(
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
                "rounds.eval_every=2",
                "sim.workers=0",
                "output.run_store=false",
                "output.progress=false",
                *extra,
            ]
        )
    )


def test_fedbuff_figures_did_not_drift_when_it_moved_onto_intake() -> None:
    """Median over int8 + error-feedback payloads, int8 downlink deltas, 30% dropouts:
    the bytes, outcomes, staleness, clock and model recorded before the move."""
    result = fedbuff_run(*ALL_ON).simulation
    rows = [
        (m.bytes_up, m.bytes_down, m.clients_completed, m.clients_failed, m.clients_late)
        for m in result.rounds
    ]
    assert rows == [
        (2094, 23940, 3, 1, 0),
        (2094, 4112, 3, 0, 0),
        (2094, 8184, 3, 1, 0),
        (2094, 9596, 3, 1, 0),
        (2094, 10844, 3, 2, 0),
        (2094, 7980, 3, 0, 0),
    ]
    assert [m.fedbuff.staleness_max for m in result.rounds if m.fedbuff] == [0, 1, 1, 2, 1, 1]
    times = [m.sim_time_s for m in result.rounds]  # re-pinned: FLOPs counted per layer (#17)
    assert times == pytest.approx(
        [0.10736139780816192, 0.13971314178169458, 0.22038538290140286,
         0.2765119756249921, 0.3306083879039548, 0.39183159474131646], rel=1e-12,
    )  # fmt: skip
    evaluated = [m.accuracy for m in result.rounds]  # eval_every=2 and the last step
    assert evaluated == pytest.approx(
        [None, 0.14166666666666666, None, 0.2833333333333333, None, 0.2861111111111111]
    )
    params = result.params.astype(np.float64)
    assert float(params.sum()) == pytest.approx(-2.5547659443254815, rel=1e-6)
    assert float(np.linalg.norm(params)) == pytest.approx(1.9412888288836454, rel=1e-6)


def test_fedbuff_codec_record_carries_the_shared_decode_and_encode_seconds() -> None:
    compressed = fedbuff_run("compression.quantize=8").simulation.rounds
    assert all(m.codec is not None and m.codec.server_decode_s > 0 for m in compressed)
    assert all(m.codec is not None and m.codec.client_encode_s for m in compressed)
    dense = fedbuff_run().simulation.rounds
    assert all(m.codec is not None and m.codec.server_decode_s == 0 for m in dense)
    assert all(m.codec is not None and m.codec.client_encode_s is None for m in dense)


def test_fedbuff_failures_reach_the_sinks_like_a_synchronous_rounds() -> None:
    """NaN clients and 30% dropouts: each failure is a ``ClientFailure`` event of its
    server step, emitted before that step's metrics, as in the synchronous drivers."""
    data, factory, sink = FakeData(12), FakeFactory(nan_clients=(1, 3, 9)), MemorySink()
    job = ClientJob(trainer_factory=factory, data=data, root_seed=7)
    executor = InProcessExecutor(job, 4)
    dist = ProfileDistribution(flops_max=1e7, compute_spread=100.0, latency_ms=1.0)
    sim = AsyncSimulation(
        settings=AsyncSettings(6, 6, LocalPlan(lr=0.5), root_seed=7, dropout_rate=0.3),
        server=FedBuffServer(4, FedBuffConfig(buffer_size=3)),
        trainer=factory(),
        executor=executor,
        client_sizes=data.client_sizes(),
        test_data=data.client(0),
        profiles=ProfileTable.generate(12, dist, np.random.default_rng(0)),
        server_optimizer=FedAvg(),
        sinks=(sink,),
    )
    try:
        result = sim.run(factory().initial_params(1))
    finally:
        executor.close()
    failures = [e for e in sink.events if isinstance(e, ClientFailure)]
    assert len(failures) == sum(m.clients_failed for m in result.rounds) > 0
    assert any("NaN" in f.reason for f in failures)
    assert any("dropped out" in f.reason for f in failures)
    steps = [e.round_idx for e in sink.events if isinstance(e, RoundMetrics)]
    for f in failures:  # each failure precedes its own step's metrics
        assert sink.events.index(f) < sink.events.index(result.rounds[steps.index(f.round_idx)])
