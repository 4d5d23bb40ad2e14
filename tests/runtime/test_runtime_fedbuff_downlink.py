"""FedBuff over gRPC with downlink compression and the device registry: the runtime's
buffered center serves each client the deltas to the version it was dispatched on, as
the FedBuff simulator does, and writes the clients' profiles to the registry."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rthelpers import SMALL

from fedstrata.api import run
from fedstrata.compress import CompressionSpec, DownlinkEncoder
from fedstrata.compress.downlink import DownlinkMessage, apply_downlink
from fedstrata.config import load_config
from fedstrata.core.context import RoundContext
from fedstrata.errors import ConfigError, ProtocolError
from fedstrata.runtime import check_supported, deployment
from fedstrata.runtime.downlink import DownlinkAsk, DownlinkServer
from fedstrata.runtime.fedbuff import BufferedCenter
from fedstrata.runtime.fedbuff_downlink import VersionedDownlink
from fedstrata.scheduling import Registry

ASYNC = [*SMALL, "scheduling.async.enabled=true", "scheduling.async.buffer_size=2"]
ONE = [*ASYNC, "scheduling.async.concurrency=1", "scheduling.async.server_updates=3"]


def _capture(dep) -> list[BufferedCenter]:
    centers: list[BufferedCenter] = []
    make = dep.center

    def center(**kw):
        c = make(**kw)
        assert isinstance(c, BufferedCenter)
        centers.append(c)
        return c

    object.__setattr__(dep, "center", center)
    return centers


@pytest.mark.parametrize("preset", ["int8", "topk1_int8_ef"])
def test_one_client_in_flight_with_downlink_is_the_simulators_model(federation, preset):
    """Concurrency 1: the simulator's order of events, so the replica every client
    trains from and the model are the simulator's bit for bit, and so are the bytes."""
    cfg = load_config(overrides=[*ONE, f"downlink.preset={preset}"])
    sim = run(cfg).simulation
    dep = deployment(cfg)
    centers = _capture(dep)
    result, reports = asyncio.run(federation(dep))
    assert not result.rejections
    assert sum(len(r.rounds) for r in reports) == 6
    assert result.params.tobytes() == sim.params.tobytes()
    dense = load_config(overrides=ONE)
    assert result.params.tobytes() != run(dense).simulation.params.tobytes()
    down = [s.bytes_down for s in centers[0].steps]
    assert down == [r.bytes_down for r in sim.rounds]


def test_several_clients_in_flight_with_downlink(federation):
    cfg = load_config(overrides=[
        *ASYNC, "scheduling.async.concurrency=3", "scheduling.async.server_updates=4",
        "downlink.preset=int8",
    ])  # fmt: skip
    dep = deployment(cfg)
    centers = _capture(dep)
    result, _ = asyncio.run(federation(dep))  # tasks in flight at the end are refused
    steps = centers[0].steps
    assert len(steps) == 4
    assert all(len(s.outcome.accepted) == 2 for s in steps)
    assert np.isfinite(result.params).all()
    assert not np.array_equal(result.params, dep.initial_params())


def test_a_late_download_gets_its_dispatch_version_not_the_newest():
    """A client dispatched on version 1 that downloads after version 2 is published is
    brought to version 1: the encoder's replica at its dispatch."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=50).astype(np.float32)
    spec = CompressionSpec(quantize=8)
    versioned = VersionedDownlink(DownlinkServer(spec, 4), root_seed=7)
    versioned.start(start)
    reference = DownlinkEncoder(start, spec, 4)
    models = [start + rng.normal(size=50).astype(np.float32) for _ in range(2)]
    versioned.pin(0)
    versioned.publish(models[0], 1)
    reference.publish(models[0], RoundContext(1, 7))
    at_one = np.array(reference.replica)
    versioned.pin(1)
    versioned.publish(models[1], 2)
    full = DownlinkMessage.from_bytes(versioned.message(1, DownlinkAsk(None)))
    assert full.version == 1
    assert full.base_version is None
    delta = DownlinkMessage.from_bytes(versioned.message(1, DownlinkAsk(0)))
    assert delta.base_version == 0
    assert delta.version == 1
    got, version = apply_downlink(delta, start, 0)
    assert version == 1
    assert got.tobytes() == at_one.tobytes()
    ahead = DownlinkMessage.from_bytes(versioned.message(1, DownlinkAsk(2)))
    assert ahead.base_version is None  # a version it was never sent: the full model
    versioned.keep({2})
    with pytest.raises(ProtocolError, match="version 1"):
        versioned.message(1, DownlinkAsk(0))
    with pytest.raises(ProtocolError, match="encoder is at 2"):
        versioned.pin(1)


@settings(max_examples=25, deadline=None)
@given(
    steps=st.integers(1, 6),
    history=st.integers(1, 4),
    picks=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_any_held_version_is_brought_to_its_dispatch_version(steps, history, picks, seed):
    """Law: whatever later steps published, a client holding version ``h`` that applies
    the message for dispatch version ``v`` holds the encoder's replica at ``v`` bit for
    bit (deltas or the full model), and the message is the simulator's for ``h``."""
    rng = np.random.default_rng(seed)
    spec = CompressionSpec(sparsify="topk", density=0.2, quantize=8)
    start = rng.normal(size=40).astype(np.float32)
    versioned = VersionedDownlink(DownlinkServer(spec, history), root_seed=seed)
    versioned.start(start)
    reference = DownlinkEncoder(start, spec, history)
    replicas, messages = [np.array(reference.replica)], [{}]
    versioned.pin(0)
    for version in range(1, steps + 1):
        model = (start + rng.normal(size=40)).astype(np.float32)
        versioned.publish(model, version)
        versioned.pin(version)
        reference.publish(model, RoundContext(version, seed))
        replicas.append(np.array(reference.replica))
        messages.append({h: reference.message_for(h).to_bytes() for h in range(version)})
    for h, v in picks:
        h, v = min(h, steps), min(v, steps)
        held = min(h, v)
        data = versioned.message(v, DownlinkAsk(held))
        got, version = apply_downlink(DownlinkMessage.from_bytes(data), replicas[held], held)
        assert version == v
        assert got.tobytes() == replicas[v].tobytes()
        if held < v:  # the simulator's message to a client at ``held`` dispatched on v
            assert data == messages[v][held]


def test_the_registry_holds_the_rows_the_simulator_writes(federation, tmp_path):
    """The same clients, the same fields: one device row per client, no round history
    (the FedBuff simulator records none); the runtime's profiles are measured."""
    sim_db, rt_db = tmp_path / "sim.db", tmp_path / "rt.db"
    sim_cfg = load_config(overrides=[*ONE, f"scheduling.registry_url={sim_db}"])
    rt_cfg = load_config(overrides=[*ONE, f"scheduling.registry_url={rt_db}"])
    sim = run(sim_cfg).simulation
    result, _ = asyncio.run(federation(deployment(rt_cfg)))
    assert not result.rejections
    assert result.params.tobytes() == sim.params.tobytes()  # the registry times nothing here
    with Registry.open(str(sim_db)) as a, Registry.open(str(rt_db)) as b:
        want, got = a.devices(), b.devices()
        assert got.device_id.tolist() == want.device_id.tolist() == list(range(6))
        for column in ("cpu_score", "memory_gb", "uplink_mbps", "downlink_mbps"):
            assert np.all(getattr(got, column) > 0), column
        assert len(b.history()) == len(a.history()) == 0


def test_the_clients_link_figures_reach_the_registry(federation, tmp_path):
    """Under FedBuff with a registry a client reports its configured link with its
    measured compute, as under scheduling; without a registry the figures are refused."""
    link = ["devices.uplink_mbps=7", "devices.downlink_mbps=30", "devices.latency_ms=15"]
    with pytest.raises(ConfigError, match=r"devices\.uplink_mbps"):
        check_supported(load_config(overrides=[*ONE, *link]))
    db = tmp_path / "rt.db"
    cfg = load_config(overrides=[*ONE, *link, f"scheduling.registry_url={db}"])
    asyncio.run(federation(deployment(cfg)))
    with Registry.open(str(db)) as reg:
        rows = reg.devices()
    assert rows.uplink_mbps.tolist() == [7.0] * 6
    assert rows.downlink_mbps.tolist() == [30.0] * 6
    assert rows.network_latency_ms.tolist() == [15.0] * 6


def test_fedbuff_takes_downlink_and_registry(tmp_path):
    check_supported(load_config(overrides=[
        *ASYNC, "downlink.preset=int8", f"scheduling.registry_url={tmp_path}/d.db",
    ]))  # fmt: skip
