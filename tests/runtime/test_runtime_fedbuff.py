"""FedBuff over gRPC (issue 13 part 4): the round engine's buffered policy and the
FedBuff buffer at a real center, with real client agents."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from rthelpers import SMALL

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.runtime import check_supported, deployment
from fedstrata.runtime.fedbuff import BufferedCenter

ASYNC = [*SMALL, "scheduling.async.enabled=true", "scheduling.async.buffer_size=2"]


def test_one_client_in_flight_trains_the_simulators_model(federation):
    """With concurrency 1 the order of events is the simulator's: same dispatches,
    same randomness (task number = the simulator's dispatch), same model bit for bit."""
    cfg = load_config(overrides=[
        *ASYNC, "scheduling.async.concurrency=1", "scheduling.async.server_updates=3",
    ])  # fmt: skip
    sim = run(cfg).simulation
    dep = deployment(cfg)
    result, reports = asyncio.run(federation(dep))
    assert not result.rejections
    assert sum(len(r.rounds) for r in reports) == 6  # 3 steps of K = 2
    assert result.params.tobytes() == sim.params.tobytes()
    assert len(sim.rounds) == 3


def test_buffered_steps_with_several_clients_in_flight(federation):
    cfg = load_config(overrides=[
        *ASYNC, "scheduling.async.concurrency=3", "scheduling.async.server_updates=4",
        "compression.preset=int8",
    ])  # fmt: skip
    dep = deployment(cfg)
    centers: list[BufferedCenter] = []
    make = dep.center

    def center(**kw):
        c = make(**kw)
        assert isinstance(c, BufferedCenter)
        centers.append(c)
        return c

    object.__setattr__(dep, "center", center)
    result, reports = asyncio.run(federation(dep))
    steps = centers[0].steps
    assert len(steps) == 4
    assert all(len(s.outcome.accepted) == 2 for s in steps)
    assert all(0 <= s.mean_staleness <= 2 for s in steps)
    assert all(s.bytes_up > 0 for s in steps)
    assert not np.array_equal(result.params, dep.initial_params())
    trained = sum(len(r.rounds) for r in reports)
    assert trained >= 8  # every accepted update came from a real client


class _DiesOnDownload:
    def __init__(self, link):
        self.link = link

    def session(self, *args, **kw):
        return self.link.session(*args, **kw)

    async def download(self, round_idx):
        raise RuntimeError("process killed")


def test_a_client_that_dies_in_flight_frees_its_slot(federation):
    cfg = load_config(overrides=[
        *ASYNC, "scheduling.async.concurrency=2", "scheduling.async.server_updates=3",
    ])  # fmt: skip
    dep = deployment(cfg)
    result, _ = asyncio.run(federation(
        dep, wrap=lambda cid, link: _DiesOnDownload(link) if cid < 2 else link,
        dies=RuntimeError,
    ))  # fmt: skip
    assert not np.array_equal(result.params, dep.initial_params())


@pytest.mark.parametrize("extra", ["rounds.deadline_s=5", "scheduling.selector=oort"])
def test_what_the_buffered_runtime_does_not_carry_is_refused(extra):
    with pytest.raises(ConfigError, match=extra.split("=")[0].replace(".", r"\.")):
        check_supported(load_config(overrides=[*ASYNC, extra]))
