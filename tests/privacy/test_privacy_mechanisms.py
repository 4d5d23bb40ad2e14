"""Central, local and distributed noise stages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedstrata.core.context import RoundContext
from fedstrata.errors import ConfigError, PipelineError
from fedstrata.pipeline import DenseCodec, Pipeline
from fedstrata.privacy import (
    CentralGaussian,
    DistributedDiscreteGaussian,
    DistributedSkellam,
    FixedClip,
    LocalGaussian,
)

SIZE = 50_000


def test_noise_stages_require_clip_earlier() -> None:
    for stage in (
        CentralGaussian(1.0, 1.0),
        LocalGaussian(1.0, 1.0),
        DistributedDiscreteGaussian(1.0, 1.0, 4, scale=10.0),
    ):
        assert stage.requires_before == frozenset({"clip"})
        with pytest.raises(PipelineError, match="clip"):
            Pipeline([stage], DenseCodec(3))
        Pipeline([FixedClip(1.0), stage], DenseCodec(3))


def test_central_gaussian_noise_std_and_reproducible() -> None:
    central = CentralGaussian(noise_multiplier=0.8, clip_norm=2.0)
    ctx = RoundContext(round_idx=3, root_seed=11)
    total = np.zeros(SIZE)
    out = central.add_noise(total, ctx)
    assert out is total
    assert total.std() == pytest.approx(1.6, rel=0.02)
    again = central.add_noise(np.zeros(SIZE), ctx)
    np.testing.assert_array_equal(again, total)
    assert central.decode(total.astype(np.float32), ctx) is not None


def test_central_gaussian_per_round_override() -> None:
    central = CentralGaussian(noise_multiplier=1.0, clip_norm=1.0)
    total = central.add_noise(
        np.zeros(SIZE, dtype=np.float32), RoundContext(0, 1), noise_multiplier=3.0, clip_norm=0.5
    )
    assert total.dtype == np.float32
    assert total.std() == pytest.approx(1.5, rel=0.02)


def test_central_gaussian_decode_refuses_unnoised_round() -> None:
    central = CentralGaussian(1.0, 1.0)
    pipe = Pipeline([FixedClip(1.0), central], DenseCodec(4))
    central.add_noise(np.zeros(4), RoundContext(0, 1))
    pipe.decode_aggregate(np.zeros(4, dtype=np.float32), RoundContext(0, 1))
    with pytest.raises(PipelineError, match="add_noise"):
        pipe.decode_aggregate(np.zeros(4, dtype=np.float32), RoundContext(1, 1))


def test_local_gaussian_adds_noise_per_client() -> None:
    local = LocalGaussian(noise_multiplier=2.0, clip_norm=0.5)
    ctx = RoundContext(0, 5)
    a = local.encode(np.zeros(SIZE, dtype=np.float32), ctx.for_client(1))
    b = local.encode(np.zeros(SIZE, dtype=np.float32), ctx.for_client(2))
    assert a.std() == pytest.approx(1.0, rel=0.02)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("cls", [DistributedDiscreteGaussian, DistributedSkellam])
def test_distributed_shares_sum_to_target_variance(cls: type) -> None:
    sigma, clip, n, scale = 1.0, 1.0, 16, 64.0
    mech = cls(sigma, clip, n, scale=scale)
    rng = np.random.default_rng(0)
    shares = [mech.noise_share(SIZE, rng) for _ in range(n)]
    assert all(s.dtype == np.int64 for s in shares)
    total = np.sum(shares, axis=0)
    assert abs(total.mean()) < 5 * sigma * clip * scale / math.sqrt(SIZE)
    assert total.std() == pytest.approx(sigma * clip * scale, rel=0.02)


def test_distributed_encode_in_real_units() -> None:
    mech = DistributedDiscreteGaussian(0.5, 2.0, num_clients=4, scale=100.0)
    ctx = RoundContext(0, 3)
    total = sum(mech.encode(np.zeros(SIZE, dtype=np.float32), ctx.for_client(c)) for c in range(4))
    assert np.asarray(total).std() == pytest.approx(1.0, rel=0.02)  # σ C in real units
    # every value sits on the 1/scale grid
    one = mech.encode(np.zeros(100, dtype=np.float32), ctx.for_client(9)) * 100
    np.testing.assert_allclose(one, np.round(one), atol=1e-3)


def test_distributed_rejects_sub_unit_shares() -> None:
    with pytest.raises(ConfigError, match="scale"):
        DistributedDiscreteGaussian(1.0, 1.0, num_clients=100, scale=1.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"noise_multiplier": -1.0, "clip_norm": 1.0}, "noise_multiplier"),
        ({"noise_multiplier": 1.0, "clip_norm": 0.0}, "clip_norm"),
    ],
)
def test_central_validation(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        CentralGaussian(**kwargs)
