"""Center and client agents over gRPC on loopback train the simulator's model."""

import asyncio

import numpy as np

from fedstrata.api import run
from fedstrata.core.metrics import precision_stats
from fedstrata.core.payload import Payload
from fedstrata.sim.intake import result_problem
from fedstrata.sim.tasks import TaskResult


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
    for got, want in zip(result.rounds, sim.rounds, strict=True):  # one codec record
        assert got.codec is not None
        assert want.codec is not None
        assert got.codec.uplink_ratio == want.codec.uplink_ratio
        assert got.codec.uplink_bytes_per_client == want.codec.uplink_bytes_per_client
        assert got.codec.downlink_bytes_per_client == want.codec.downlink_bytes_per_client


class _Passthrough:
    """A client link that forwards everything; subclasses change what it submits."""

    def __init__(self, link):
        self.link = link

    def session(self):
        return self.link.session()

    async def download(self, round_idx):
        return await self.link.download(round_idx)


class _SendsNaN(_Passthrough):
    """A client whose update has two NaN entries (a diverged local run)."""

    async def submit(self, round_idx, payload, num_examples, metrics):
        body = np.frombuffer(payload.body, dtype="<f4").copy()
        body[:2] = np.nan
        bad = Payload(payload.codec, payload.params, body.tobytes())
        return await self.link.submit(round_idx, bad, num_examples, metrics)


def test_a_nan_update_is_refused_in_the_simulators_words(small_deployment, federation):
    """The runtime folds a payload where the simulator checks a dense vector; both
    refuse a NaN update with one reason (``coordinator.round_logic``)."""
    victim = int(small_deployment.center().coordinator.select(0, np.arange(6))[0])

    def wrap(cid, link):
        return _SendsNaN(link) if cid == victim else link

    result, _ = asyncio.run(federation(small_deployment, wrap=wrap))
    vector = np.zeros(small_deployment.size, np.float32)
    vector[:2] = np.nan
    sim_reason = result_problem(
        TaskResult(0, victim, num_examples=1, vector=vector), small_deployment.trainer.spec
    )
    assert sim_reason == f"client {victim}: update has 2 NaN/Inf entries"
    first = result.rounds[0].outcome
    assert (victim, sim_reason) in first.failed
    assert victim not in first.accepted
    assert len(first.accepted) == 4


class _ReportsSkippedSteps(_Passthrough):
    """A client whose training metrics say fp16 loss scaling skipped two steps."""

    async def submit(self, round_idx, payload, num_examples, metrics):
        metrics = {**metrics, "skipped_steps": 2.0, "loss_scale": 1024.0}
        return await self.link.submit(round_idx, payload, num_examples, metrics)


def test_the_round_record_counts_the_clients_skipped_steps(small_deployment, federation):
    """The center's round record carries fp16's skipped steps as the simulator's does
    (``core.metrics.precision_stats`` over the folded clients' metrics)."""
    result, _ = asyncio.run(federation(small_deployment, wrap=lambda cid, link: (
        _ReportsSkippedSteps(link))))  # fmt: skip
    for rnd in result.rounds:
        accepted = len(rnd.outcome.accepted)
        assert rnd.precision == precision_stats(
            [{"skipped_steps": 2.0, "loss_scale": 1024.0}] * accepted
        )
        assert rnd.precision is not None
        assert rnd.precision.skipped_steps == 2 * accepted


def test_rounds_without_loss_scaling_carry_no_precision_record(small_deployment, federation):
    result, _ = asyncio.run(federation(small_deployment))
    assert all(rnd.precision is None for rnd in result.rounds)
