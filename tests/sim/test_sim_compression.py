"""End to end through ``fedstrata.api.run``: compressed uplink and downlink (issue 3).

A small digits federation (12 clients, 3 rounds, MLP 64-16-10) runs dense and with
compression chains; the byte counts are checked exactly against the sizes the chain's
payloads must have, and error feedback against the client state directory.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedstrata.api import RunResult, run
from fedstrata.compress import encode_vector, resolve_spec
from fedstrata.config import load_config
from fedstrata.core.payload import HEADER_SIZE

SMALL = (
    "data.num_clients=12",
    "rounds.clients_per_round=12",  # everyone every round: downlink deltas from round 1
    "rounds.rounds=3",
    "client.epochs=1",
    "model.hidden=16",
    "output.report=false",
    "output.progress=false",
    "sim.workers=0",
)
FRAME = 20 + 8  # downlink message frame + one payload's length prefix


def run_small(tmp_path: Path, *overrides: str, store: bool = False) -> RunResult:
    cfg = load_config(
        preset="quickstart",
        overrides=[*SMALL, f"output.dir={tmp_path}", f"output.run_store={store}", *overrides],
    )
    return run(cfg)


def payload_nbytes(preset: str, size: int, *, downlink: bool = False) -> int:
    """Wire size of one chain payload whose size does not depend on the values."""
    spec = resolve_spec(preset)
    if downlink:
        spec = replace(spec, error_feedback=True)  # what DownlinkEncoder does
    x = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    return encode_vector(x, spec, np.random.default_rng(1), 7).payload.nbytes


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return run_small(tmp_path_factory.mktemp("dense"))


def test_dense_run_sends_the_fp32_model_both_ways(dense):
    fp32 = HEADER_SIZE + 4 * dense.num_params
    for m in dense.simulation.rounds:
        assert m.clients_completed == 12
        assert m.bytes_up == m.bytes_down == 12 * fp32
        assert m.codec.uplink_ratio == 1.0


@pytest.mark.parametrize("preset", ["int8", "randk1_int8"])
def test_uplink_bytes_are_exactly_the_payload_sizes(tmp_path, dense, preset):
    res = run_small(tmp_path, f"compression.preset={preset}")
    one = payload_nbytes(preset, res.num_params)
    fp32 = HEADER_SIZE + 4 * res.num_params
    assert one < fp32 / 3
    for m, d in zip(res.simulation.rounds, dense.simulation.rounds, strict=True):
        assert m.bytes_up == m.clients_completed * one
        assert m.bytes_down == d.bytes_down  # the uplink chain leaves the broadcast alone
        assert m.codec.uplink_ratio == pytest.approx(fp32 / one)
        assert m.codec.uplink_bytes_per_client == one


def test_topk_uplink_ratio_is_computed_from_the_real_bytes(tmp_path, dense):
    res = run_small(tmp_path, "compression.preset=topk1_int8_ef")
    fp32 = HEADER_SIZE + 4 * res.num_params
    k = resolve_spec("topk1_int8_ef").num_kept(res.num_params)
    for m in res.simulation.rounds:
        per_client = m.bytes_up / m.clients_completed
        assert HEADER_SIZE + k < per_client < HEADER_SIZE + 64 + 3 * k  # values + indices
        assert m.codec.uplink_ratio == pytest.approx(fp32 / per_client)
    dense_up = sum(m.bytes_up for m in dense.simulation.rounds)
    assert sum(m.bytes_up for m in res.simulation.rounds) < dense_up / 40


def test_downlink_int8_sends_the_model_once_then_int8_deltas(tmp_path, dense):
    res = run_small(tmp_path, "downlink.preset=int8")
    d = res.num_params
    first, *later = res.simulation.rounds
    assert first.bytes_down == 12 * (FRAME + HEADER_SIZE + 8 + 4 * d)  # nobody holds a model
    delta = FRAME + payload_nbytes("int8", d, downlink=True)
    for m in later:
        assert m.bytes_down == 12 * delta
    assert sum(m.bytes_down for m in res.simulation.rounds) < 0.6 * sum(
        m.bytes_down for m in dense.simulation.rounds
    )
    assert [m.bytes_up for m in res.simulation.rounds] == [
        m.bytes_up for m in dense.simulation.rounds
    ]
    assert res.simulation.final_accuracy == pytest.approx(dense.simulation.final_accuracy, abs=0.1)


def test_error_feedback_residuals_live_in_the_run_store(tmp_path):
    res = run_small(tmp_path, "compression.preset=topk1_int8_ef", store=True)
    assert res.run_dir is not None
    state = res.run_dir / "client_state"
    files = sorted(p.name for p in state.iterdir())
    assert files == sorted(f"ef_residual-{c}.npy" for c in range(12))
    residual = np.load(state / "ef_residual-0.npy")
    assert residual.dtype == np.float32
    assert residual.shape == (res.num_params,)
    assert np.isfinite(residual).all()
    assert np.count_nonzero(residual) > res.num_params // 2  # top-1% leaves the rest behind


def test_no_client_state_without_error_feedback(tmp_path):
    res = run_small(tmp_path, "compression.preset=randk1_int8", store=True)
    assert res.run_dir is not None
    state = res.run_dir / "client_state"
    assert not state.exists() or not any(state.iterdir())


def test_compressed_run_is_bit_identical_across_worker_counts(tmp_path):
    chain = ("compression.preset=topk1_int8_ef", "downlink.preset=int8")
    inproc = run_small(tmp_path / "w0", *chain, "sim.workers=0")
    forked = run_small(tmp_path / "w1", *chain, "sim.workers=1")
    assert (inproc.workers, forked.workers) == (0, 1)
    assert inproc.simulation.params.tobytes() == forked.simulation.params.tobytes()
    for a, b in zip(inproc.simulation.rounds, forked.simulation.rounds, strict=True):
        assert (a.bytes_up, a.bytes_down, a.accuracy, a.loss) == (
            b.bytes_up,
            b.bytes_down,
            b.accuracy,
            b.loss,
        )
