"""Center and client agents over gRPC on loopback train the simulator's model."""

import asyncio

import numpy as np

from fedstrata.api import run


def test_runtime_model_is_bit_identical_to_the_simulator(
    small_config, small_deployment, federation
):
    sim = run(small_config).simulation
    result, reports = asyncio.run(federation(small_deployment))
    assert len(result.rounds) == 2
    assert all(len(r.outcome.accepted) == 5 for r in result.rounds)
    assert sum(len(rep.rounds) for rep in reports) == 10
    assert not result.rejections
    assert result.params.tobytes() == sim.params.tobytes()
    assert not np.array_equal(result.params, small_deployment.initial_params())


def test_wire_bytes_match_the_simulators_count(small_config, small_deployment, federation):
    sim = run(small_config).simulation
    result, _ = asyncio.run(federation(small_deployment))
    for got, want in zip(result.rounds, sim.rounds, strict=True):
        assert got.bytes_up == want.bytes_up
        assert got.bytes_down == want.bytes_down
