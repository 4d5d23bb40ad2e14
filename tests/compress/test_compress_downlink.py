"""Downlink: compressed model deltas from the client's version, full-model fallback."""

from __future__ import annotations

import numpy as np
import pytest

from fedstrata.compress import CompressionSpec, DownlinkEncoder, DownlinkMessage, apply_downlink
from fedstrata.core import RoundContext
from fedstrata.core.payload import CodecId
from fedstrata.errors import PayloadError

SIZE = 20_000
SPEC = CompressionSpec(sparsify="topk", density=0.05, quantize=8)


def _models(rounds: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    model = rng.standard_normal(SIZE).astype(np.float32)
    out = [model]
    for _ in range(rounds):
        model = (model + 0.01 * rng.standard_normal(SIZE)).astype(np.float32)
        out.append(model)
    return out


def _encoder(models: list[np.ndarray], spec: CompressionSpec = SPEC, history: int = 3):
    enc = DownlinkEncoder(models[0], spec, history=history)
    for r, m in enumerate(models[1:]):
        enc.publish(m, RoundContext(r, 5))
    return enc


@pytest.mark.parametrize(
    "spec",
    [SPEC, CompressionSpec(quantize=4, stochastic=True),
     CompressionSpec(sparsify="randk", density=0.1, quantize=8)],
)  # fmt: skip
def test_clients_following_deltas_hold_the_replica_exactly(spec: CompressionSpec) -> None:
    models = _models(6)
    enc = DownlinkEncoder(models[0], spec, history=2)
    params, version = models[0].copy(), 0
    for r, m in enumerate(models[1:]):
        enc.publish(m, RoundContext(r, 5))
        message = DownlinkMessage.from_bytes(enc.message_for(version).to_bytes())
        assert message.base_version == version
        params, version = apply_downlink(message, params, version)
        np.testing.assert_array_equal(params, enc.replica)
    assert version == enc.version == 6


def test_replica_tracks_the_model_thanks_to_carried_residual() -> None:
    models = _models(30)
    enc = _encoder(models)
    drift = np.abs(enc.replica - models[-1]).max()
    total = np.abs(models[-1] - models[0]).max()
    assert drift < 0.25 * total


def test_delta_from_older_version_and_fallbacks() -> None:
    models = _models(5)
    enc = _encoder(models, history=3)
    behind = enc.message_for(3)
    assert behind.base_version == 3
    assert len(behind.payloads) == 2
    assert all(p.codec == CodecId.CHAIN for p in behind.payloads)
    for too_old in (None, 1, 0):
        full = enc.message_for(too_old)
        assert full.base_version is None
        assert full.payloads[0].codec == CodecId.MODEL_F32
        assert full.nbytes == enc.full_nbytes
        params, version = apply_downlink(full, None, None)
        np.testing.assert_array_equal(params, enc.replica)
        assert version == 5
    assert enc.message_for(5).payloads == ()
    assert behind.nbytes < enc.full_nbytes / 4


def test_delta_bundle_larger_than_model_falls_back_to_full() -> None:
    models = _models(4)
    enc = _encoder(models, spec=CompressionSpec(quantize=8), history=4)  # ~0.27 of a model
    assert enc.message_for(1).base_version == 1  # 3 deltas: ~0.8 of the model
    assert enc.message_for(0).base_version is None  # 4 deltas would outweigh it


def test_apply_rejects_mismatched_versions_and_leaves_params() -> None:
    models = _models(3)
    enc = _encoder(models)
    params = models[0].copy()
    with pytest.raises(PayloadError, match="version"):
        apply_downlink(enc.message_for(1), params, 0)
    np.testing.assert_array_equal(params, models[0])
    message = enc.message_for(1)
    bad = message.payloads[1]
    corrupt = type(bad)(bad.codec, bad.params, bad.body[:-1])
    held = enc.replica.copy()
    with pytest.raises(PayloadError):
        apply_downlink(DownlinkMessage(1, 3, (message.payloads[0], corrupt)), held, 1)
    np.testing.assert_array_equal(held, enc.replica)


def test_malformed_messages_raise_payload_error() -> None:
    enc = _encoder(_models(2))
    raw = enc.message_for(0).to_bytes()
    for bad in (raw[:10], raw[:-1], raw + b"\x00"):
        with pytest.raises(PayloadError):
            DownlinkMessage.from_bytes(bad)
    delta = enc.message_for(1)
    wrong_count = DownlinkMessage(1, 3, delta.payloads)
    with pytest.raises(PayloadError, match="number of deltas"):
        apply_downlink(wrong_count, enc.replica.copy(), 1)
    full = enc.full_message()
    with pytest.raises(PayloadError, match="values"):
        apply_downlink(full, np.zeros(SIZE + 1, np.float32), 0)
