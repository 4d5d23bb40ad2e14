"""Issue 12 part 4: central DP composes with lossy compression and with scheduling.

End to end through ``fedstrata.api.run``. The invariant of both: every update folded
into the noised sum has norm <= clip_norm and weight 1 (the sensitivity the noise is
calibrated to), so ε is the accountant's for the same q and rounds as the dense,
unscheduled DP run.
"""

from __future__ import annotations

from functools import cache
from unittest.mock import patch

import numpy as np
import pytest
from simfakes import FakeData, FakeTrainer

from fedstrata.aggregation import WeightedMean
from fedstrata.api import RunResult, run
from fedstrata.api.scheduling import scheduler
from fedstrata.config import FedConfig, load_config
from fedstrata.core import HEADER_SIZE
from fedstrata.errors import ConfigError
from fedstrata.sim import ProfileDistribution, ProfileTable
from fedstrata.sim.scheduled import SettlementWeighted

CLIP = 0.5
PARAMS = 64 * 10 + 10  # logreg on 8x8 digits
DENSE = HEADER_SIZE + 4 * PARAMS


def recording_fold(seen: list[tuple[float, float]]):
    """``WeightedMean.accumulate_payload`` that also notes the weight and norm it folds."""
    original = WeightedMean.accumulate_payload

    def fold(self, state, codec, payload, weight, **kw):
        norm = float(np.linalg.norm(codec.decode(payload).astype(np.float64)))
        seen.append((weight, norm))
        return original(self, state, codec, payload, weight, **kw)

    return fold


def make_config(*extra: str) -> FedConfig:
    return load_config(
        overrides=[
            "data.name=digits",
            "data.partition=iid",
            "data.num_clients=40",
            "model.kind=logreg",
            "model.init_seed=7",
            "client.epochs=null",
            "client.steps=3",
            "client.lr=0.5",
            "rounds.clients_per_round=8",
            "rounds.rounds=4",
            "rounds.eval_every=4",
            "privacy.mechanism=central",
            "privacy.epsilon=2.0",
            f"privacy.clip_norm={CLIP}",
            "sim.workers=0",
            "output.run_store=false",
            "output.progress=false",
            *extra,
        ]
    )


@cache
def recorded(*extra: str) -> tuple[RunResult, tuple[tuple[float, float], ...]]:
    seen: list[tuple[float, float]] = []
    with patch.object(WeightedMean, "accumulate_payload", recording_fold(seen)):
        result = run(make_config(*extra))
    return result, tuple(seen)


def stat(result: RunResult, key: str) -> list[float]:
    """Per round, ``family.field`` of the typed records (``privacy.epsilon_spent``)."""
    family, name = key.split(".")
    return [getattr(getattr(m, family), name) for m in result.simulation.rounds]


LOSSY = {
    "int8": ("compression.quantize=8", "compression.stochastic=true"),
    "int4+ef": (
        "compression.quantize=4",
        "compression.stochastic=true",
        "compression.error_feedback=true",
    ),
    "randk": ("compression.sparsify=randk", "compression.density=0.1"),
}


@pytest.mark.parametrize("name", sorted(LOSSY))
def test_lossy_codecs_keep_every_folded_update_within_clip_norm(name: str) -> None:
    dense, _ = recorded()
    result, seen = recorded(*LOSSY[name])
    assert seen
    assert all(norm <= CLIP for _, norm in seen)
    assert all(weight == 1.0 for weight, _ in seen)
    assert all(x <= CLIP for x in stat(result, "privacy.folded_norm_max"))
    assert stat(result, "privacy.epsilon_spent") == stat(dense, "privacy.epsilon_spent")
    assert stat(result, "privacy.sampling_rate") == stat(dense, "privacy.sampling_rate")
    up = sum(m.bytes_up for m in result.simulation.rounds)
    assert up < sum(m.bytes_up for m in dense.simulation.rounds) / 3
    assert all(x < DENSE / 3 for x in stat(result, "codec.uplink_bytes_per_client"))


def test_the_server_clip_does_work_under_random_k() -> None:
    """random-k rescales by d/k: the decoded updates exceed C and are clipped back."""
    result, _ = recorded(*LOSSY["randk"])
    assert max(stat(result, "privacy.decoded_norm_max")) > 2 * CLIP
    assert sum(stat(result, "privacy.server_clipped")) > 0


SCHED = (
    "rounds.deadline_s=30",
    "scheduling.allocation=true",
    "scheduling.skip_infeasible=false",
    "devices.flops_max=2e6",
)


def test_allocation_under_dp_keeps_weights_one_and_the_accountant_unchanged() -> None:
    dense, _ = recorded()
    result, seen = recorded(*SCHED)
    assert seen
    assert all(weight == 1.0 for weight, _ in seen)
    assert all(norm <= CLIP * (1 + 1e-6) for _, norm in seen)
    assert stat(result, "privacy.epsilon_spent") == stat(dense, "privacy.epsilon_spent")
    assert stat(result, "privacy.sampling_rate") == stat(dense, "privacy.sampling_rate")
    steps = stat(result, "schedule.mean_steps")  # the planner sized the work
    assert all(s != 3 for s in steps)
    assert all(m.sim_round_s <= 30 for m in result.simulation.rounds)


def test_under_dp_the_scheduler_has_no_selector_and_no_work_weights() -> None:
    """Partial work counts with weight 1 (not done/assigned) and the cohort stays Poisson."""
    data = FakeData(12)
    profiles = ProfileTable.generate(12, ProfileDistribution(), np.random.default_rng(0))
    base = ("data.num_clients=12", "rounds.clients_per_round=4", *SCHED)
    for private in (True, False):
        cfg = make_config(*base) if private else make_config(*base, "privacy.mechanism=none")
        inner = WeightedMean()
        planner, selector, agg = scheduler(
            cfg, dataset=data, trainer=FakeTrainer(), profiles=profiles, registry=None,
            aggregator=inner,
        )  # fmt: skip
        assert planner is not None
        if private:
            assert agg is inner
            assert selector is None
        else:
            assert isinstance(agg, SettlementWeighted)
            assert selector is not None


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("scheduling.selector=oort",), "utility computed from their training losses"),
        (("scheduling.overselect=0.2",), "no fixed cohort to over-select"),
    ],
)
def test_dp_refuses_data_dependent_or_fixed_cohort_selection(extra, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make_config(*extra)
