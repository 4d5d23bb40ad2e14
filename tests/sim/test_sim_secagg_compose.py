"""Issue 12 part 4: secure aggregation composes with compression, distributed DP,
scheduling, and charges its protocol to the simulated clock (flat synchronous runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.core.payload import HEADER_SIZE
from fedstrata.errors import ConfigError
from fedstrata.sim import ProfileTable
from fedstrata.sim.protocol_cost import charge
from fedstrata.sim.settlement import SettlementWeighted

BASE = [
    "output.run_store=false", "sim.workers=0", "data.num_clients=12",
    "rounds.clients_per_round=6", "secagg.enabled=true", "secagg.dropout_rate=0.0",
]  # fmt: skip
RANDK_INT8 = [
    "compression.sparsify=randk", "compression.density=0.1", "compression.quantize=8",
    "compression.stochastic=true", "secagg.max_weight=8",
]  # fmt: skip
DISTRIBUTED = [
    "privacy.mechanism=distributed", "privacy.accountant=rdp", "privacy.epsilon=2",
    "evaluation.every=0",
]  # fmt: skip


def _run(*overrides: str, rounds: int = 2):
    return run(load_config(overrides=[*BASE, f"rounds.rounds={rounds}", *overrides]))


def test_randk_int8_under_secagg_records_uplink_ten_times_below_dense() -> None:
    """Issue 12 part 4: randk 0.1 + 8-bit stochastic quantization enter the ring; the
    recorded uplink (protocol bytes included) is >= 10x below dense float32."""
    result = _run(*RANDK_INT8)
    for m in result.simulation.rounds:
        dense = m.clients_completed * (HEADER_SIZE + 4 * result.num_params)
        assert m.bytes_up * 10 <= dense
        assert m.codec.uplink_ratio >= 10
        assert m.secagg.dropped == 0
    assert result.simulation.final_accuracy is not None


@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ("compression.sparsify=topk", "support differs"),
        ("compression.sparsify=topk_approx", "support differs"),
        ("compression.zstd=true", "uniformly random"),
        ("compression.block_size=64", "cohort-shared scale"),
    ],
)
def test_compression_that_cannot_enter_the_ring_is_refused(setting: str, reason: str) -> None:
    """Issue 12 part 4: refused at config time with the in-principle reason."""
    extra = ["compression.density=0.1"] if "topk" in setting else ["compression.quantize=8"]
    with pytest.raises(ConfigError, match=reason):
        load_config(overrides=[*BASE, setting, *extra])


def test_error_feedback_under_secagg_changes_the_run_and_keeps_residuals(tmp_path) -> None:
    """Issue 12 part 4: client-side error feedback under masking is honoured (the
    residuals are stored per client and the trained model differs from without it)."""
    out = [f"output.dir={tmp_path}", "output.run_store=true", "output.report=false"]
    with_ef = _run(*RANDK_INT8, "compression.error_feedback=true", *out)
    without = _run(*RANDK_INT8)
    assert not np.array_equal(with_ef.simulation.params, without.simulation.params)
    assert with_ef.run_dir is not None
    assert any((with_ef.run_dir / "client_state").rglob("*"))
    with pytest.raises(ConfigError, match=r"no\s+longer bounded by privacy.clip_norm"):
        load_config(overrides=[*BASE, *DISTRIBUTED, "compression.error_feedback=true"])


def test_distributed_dp_needs_secagg_rdp_and_online_devices() -> None:
    """Issue 12 part 4: distributed DP is refused without secure aggregation, with PLD
    (no fixed-size event), or with offline devices (inclusion above k / N)."""
    plain = [o for o in BASE if not o.startswith("secagg.enabled")]
    with pytest.raises(ConfigError, match=r"set secagg\.enabled"):
        load_config(overrides=[*plain, *DISTRIBUTED])
    with pytest.raises(ConfigError, match="accountant: rdp"):
        load_config(overrides=[*BASE, *DISTRIBUTED, "privacy.accountant=pld"])
    with pytest.raises(ConfigError, match="inclusion probability"):
        load_config(overrides=[*BASE, *DISTRIBUTED, "devices.availability=0.9"])


def test_distributed_dp_epsilon_matches_dp_accounting_and_stops_when_spent(
    fixed_size_epsilon,
) -> None:
    """Issue 12 part 4: ε recorded per round equals an independent dp-accounting
    computation within 1%; the run stops when the planned budget is spent."""
    result = _run(*DISTRIBUTED, "privacy.planned_rounds=2", rounds=4)
    rounds = result.simulation.rounds
    assert len(rounds) == 2
    assert "would raise" in (result.simulation.stopped_reason or "")
    sigmas = [m.privacy.noise_multiplier for m in rounds]
    for i, m in enumerate(rounds):
        want = fixed_size_epsilon(sigmas[: i + 1], 12, 6)
        assert m.privacy.epsilon_spent == pytest.approx(want, rel=0.01)
        assert m.privacy.share_std >= 1
    assert rounds[-1].privacy.epsilon_spent <= 2.0 + 1e-9


def test_central_dp_under_secagg_noises_the_ring_sum_for_its_sensitivity(
    tmp_path, fixed_size_epsilon
) -> None:
    """Issue 12 part 4: central DP with secagg and lossy ring compression: clients clip,
    the server noises the securely summed aggregate with the sensitivity that includes
    rounding and the random-k rescaling; fixed-size cohorts accounted as dp-accounting
    computes them (within 1%)."""
    central = [o.replace("distributed", "central") for o in DISTRIBUTED]
    config = load_config(overrides=[*BASE, *central, *RANDK_INT8, "rounds.rounds=2"])
    from fedstrata.api.components import pipeline, secure_aggregation
    from fedstrata.builders import build_dataset
    from fedstrata.privacy import CentralGaussian

    dataset = build_dataset(config.data)
    secure = secure_aggregation(config, 9610, dataset)
    assert secure is not None
    ring = secure[0]
    pipe = pipeline(config, 9610, tmp_path, ring)
    assert pipe is not None
    (noise,) = [s for s in pipe.stages if isinstance(s, CentralGaussian)]
    want = (9610 / ring.count) * (0.15 + math.sqrt(ring.count) / ring.spec.scale)
    assert noise.clip_norm == pytest.approx(want)
    result = run(config)
    rounds = result.simulation.rounds
    sigmas = [m.privacy.noise_multiplier for m in rounds]
    assert rounds[-1].privacy.epsilon_spent == pytest.approx(
        fixed_size_epsilon(sigmas, 12, 6), rel=0.01
    )


def test_secagg_with_allocation_keeps_settlement_weights(monkeypatch) -> None:
    """Issue 12 part 4: with scheduling.allocation the settlement-weighted aggregator
    wraps the secure aggregator (its partial-work weights reach the ring)."""
    calls: list[float] = []
    original = SettlementWeighted.accumulate_payload

    def spy(self, state, codec, payload, weight, **kw):  # type: ignore[no-untyped-def]
        calls.append(weight)
        return original(self, state, codec, payload, weight, **kw)

    monkeypatch.setattr(SettlementWeighted, "accumulate_payload", spy)
    result = _run("scheduling.allocation=true", "rounds.deadline_s=2", "scheduling.max_steps=2")
    assert len(calls) == sum(m.clients_completed for m in result.simulation.rounds) > 0


def test_protocol_legs_are_charged_to_the_round() -> None:
    """Issue 12 part 4: the round's simulated time and bytes include the protocol."""
    secure = _run(rounds=1).simulation.rounds[0]
    added = secure.codec.protocol_sim_s
    assert added > 0
    assert secure.sim_round_s >= secure.downlink_s + secure.compute_s + secure.uplink_s + added
    protocol = secure.secagg.bytes_up_per_client  # masked input included
    assert secure.bytes_up > secure.clients_completed * protocol  # payload + protocol


class _Cost:
    client_ids = np.array([0, 2], dtype=np.int64)
    up_bytes = np.array([1000, 3000], dtype=np.int64)
    down_bytes = np.array([2000, 500], dtype=np.int64)
    client_s = np.array([0.01, 0.02])
    server_s = 0.5
    round_trips = 4


def test_charge_times_each_device_on_its_own_links() -> None:
    """Issue 12 part 4: bytes over each device's links + latency per exchange + compute."""
    n = 3
    table = ProfileTable(
        flops=np.full(n, 1e9), memory_gb=np.full(n, 4.0),
        uplink_bps=np.array([8e3, 8e6, 16e3]), downlink_bps=np.array([16e3, 8e6, 8e3]),
        latency_s=np.array([0.1, 0.0, 0.2]), availability=np.ones(n),
    )  # fmt: skip
    got = charge(_Cost(), table)
    c0 = 1000 * 8 / 8e3 + 2000 * 8 / 16e3 + 8 * 0.1 + 0.01
    c2 = 3000 * 8 / 16e3 + 500 * 8 / 8e3 + 8 * 0.2 + 0.02
    assert got.seconds == pytest.approx(max(c0, c2) + 0.5)
    assert (got.bytes_up, got.bytes_down) == (4000, 2500)
    assert math.isfinite(got.seconds)
