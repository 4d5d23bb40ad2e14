"""The public surface of fedstrata.privacy."""

from __future__ import annotations

from fedstrata import privacy


def test_public_api_surface() -> None:
    assert sorted(privacy.__all__) == sorted(
        [
            "DEFAULT_STAGES", "AccountantState", "AccountingMethod", "AdaptiveClip",
            "AdaptiveClipState", "AllocatorState",
            "BudgetAllocator", "Calibration", "CentralGaussian", "DistributedDiscreteGaussian",
            "DistributedSkellam", "FixedClip", "LocalGaussian", "PlateauSwitch",
            "PrivacyAccountant", "PrivacyRoundMetrics", "RoundEvent", "Sampling", "SamplingKind",
            "StagePlan", "StageSpec", "adaptive_clip_step", "calibrate_stages", "clip_l2",
            "discrete_gaussian", "discrete_laplace", "epsilon_of_events", "gaussian",
            "is_plateau", "l2_norm", "skellam", "split_rounds", "to_dp_event",
            "update_noise_multiplier",
        ]
    )  # fmt: skip
    for name in privacy.__all__:
        assert getattr(privacy, name) is not None


def test_stages_satisfy_the_pipeline_protocol() -> None:
    from fedstrata.pipeline import Stage

    stages: list[Stage] = [
        privacy.FixedClip(1.0),
        privacy.AdaptiveClip(1.0),
        privacy.CentralGaussian(1.0, 1.0),
        privacy.LocalGaussian(1.0, 1.0),
        privacy.DistributedDiscreteGaussian(1.0, 1.0, 4, scale=4.0),
        privacy.DistributedSkellam(1.0, 1.0, 4, scale=4.0),
    ]
    assert {s.name for s in stages} == {"clip", "central_dp", "local_dp", "distributed_dp"}
