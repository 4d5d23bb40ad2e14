"""Adaptive clipping at the central-DP server (fedstrata.privacy.adaptive_server): the
norm follows the quantile, stays under the ceiling, the update noise composes with the
count's to the accounted multiplier, and a run reports the adapted norms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.aggregation.clipped import ClipDecoded
from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.core.context import RoundContext
from fedstrata.core.payload import Payload
from fedstrata.errors import ConfigError
from fedstrata.pipeline import DenseCodec
from fedstrata.privacy import AdaptiveClip
from fedstrata.privacy.adaptive_server import AdaptiveServerClip, default_count_noise


def _server(initial: float = 1.0, ceiling: float = 4.0, noise: float = 1e-6) -> AdaptiveServerClip:
    codec = ClipDecoded(DenseCodec(3), initial)
    return AdaptiveServerClip(AdaptiveClip(initial, 0.5, 0.5, noise), codec, 10.0, ceiling)


def _decode(server: AdaptiveServerClip, norms: list[float]) -> None:
    for norm in norms:
        vector = np.array([norm, 0.0, 0.0], np.float32)
        ctx = RoundContext(0, 0).for_client(0)
        payload: Payload = server.server_clip.inner.encode(vector, ctx)
        folded = server.server_clip.decode(payload)
        assert float(np.linalg.norm(folded)) <= server.clip_norm + 1e-6


def test_the_norm_shrinks_when_most_updates_fit_and_grows_when_most_are_clipped() -> None:
    small = _server()
    _decode(small, [0.1] * 10)
    assert small.step(RoundContext(0, 0)) < 1.0
    large = _server()
    _decode(large, [3.0] * 10)
    assert large.step(RoundContext(0, 0)) > 1.0
    assert large.server_clip.clip_norm == large.clip_norm  # the next round clips to it


def test_the_norm_never_exceeds_the_ceiling() -> None:
    server = _server(initial=1.0, ceiling=1.2)
    for r in range(20):
        _decode(server, [50.0] * 10)
        server.server_clip.take_stats()
        _decode(server, [50.0] * 10)
        assert server.step(RoundContext(r, 0)) <= 1.2


def test_the_norm_converges_near_the_target_quantile_of_the_norms() -> None:
    server = _server(initial=0.05, ceiling=10.0)
    norms = list(np.linspace(0.1, 2.0, 10))
    for r in range(200):
        _decode(server, norms)
        server.step(RoundContext(r, 0))
        server.server_clip.take_stats()
    assert 0.8 <= server.clip_norm <= 1.4  # the median of the norms is ~1.05


@given(st.floats(0.3, 20.0), st.floats(1.0, 50.0))
def test_updates_and_count_compose_to_the_accounted_multiplier(z: float, k: float) -> None:
    """Andrew et al. Thm. 1: (z_delta^-2 + (2 sigma_b)^-2)^-1/2 == z."""
    sigma_b = default_count_noise(1.0, z) * k / 2.5  # at least the default ratio
    server = AdaptiveServerClip(
        AdaptiveClip(1.0, 0.5, 0.2, sigma_b), ClipDecoded(DenseCodec(2), 1.0), 1.0, 2.0
    )
    z_delta = server.noise_multiplier(z)
    assert z_delta >= z
    assert (z_delta**-2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(z, rel=1e-9)


def test_too_little_count_noise_is_refused() -> None:
    server = _server(noise=0.1)
    with pytest.raises(ConfigError, match="count_noise_std"):
        server.noise_multiplier(1.0)


def test_the_default_count_noise_is_andrew_et_als_for_a_large_cohort() -> None:
    assert default_count_noise(400.0, 1.0) == 20.0
    assert default_count_noise(4.0, 1.0) == 2.5  # a small cohort keeps budget for updates


RUN = (
    "data.name=synthetic",
    "data.num_clients=40",
    "data.synthetic_max_samples=40",
    "model.kind=logreg",
    "client.epochs=1",
    "rounds.rounds=4",
    "rounds.clients_per_round=20",
    "sim.workers=0",
    "output.run_store=false",
    "output.report=false",
    "output.progress=false",
    "privacy.mechanism=central",
    "privacy.clip_norm=0.05",
)


def test_a_run_reports_the_adapted_norms_and_spends_what_the_fixed_clip_spends() -> None:
    adaptive = run(load_config(overrides=[*RUN, "privacy.adaptive_clip=true"])).simulation
    fixed = run(load_config(overrides=list(RUN))).simulation
    norms = [m.privacy.clip_norm for m in adaptive.rounds if m.privacy is not None]
    assert len(norms) == 4
    assert norms[0] == pytest.approx(0.05)
    assert len(set(norms)) > 1  # it moved
    for a, f in zip(adaptive.rounds, fixed.rounds, strict=True):
        assert a.privacy is not None
        assert f.privacy is not None
        assert a.privacy.epsilon_spent == pytest.approx(f.privacy.epsilon_spent)
        assert a.privacy.folded_norm_max is not None
        assert a.privacy.folded_norm_max <= a.privacy.clip_norm * (1 + 1e-6)
    assert fixed.rounds[-1].privacy is not None
    assert fixed.rounds[-1].privacy.clip_norm is None


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (("privacy.mechanism=none",), "mechanism=central"),
        (("privacy.clip_norm_max=0.01",), "clip_norm_max"),
        (("topology.mode=auto",), "adaptive clipping"),
    ],
)
def test_settings_adaptive_clipping_cannot_honour_are_refused(
    extra: tuple[str, ...], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[*RUN, "privacy.adaptive_clip=true", *extra])


def test_the_runtime_runs_adaptive_clipping_but_no_checkpoint_carries_it() -> None:
    """Issue 13: the runtime's center runs the simulator's adaptive clip
    (tests/runtime/test_runtime_dp_methods.py); a checkpoint of the adapted norm is not
    built, for either driver."""
    from fedstrata.config.compat import RUNTIME, refusal

    config = load_config(overrides=[*RUN, "privacy.adaptive_clip=true"])
    assert refusal(config, RUNTIME) is None
    with pytest.raises(ConfigError, match="adapted clip norm"):
        load_config(overrides=[*RUN, "privacy.adaptive_clip=true", "checkpoint.enabled=true"])
