"""Central DP end to end through ``fedstrata.api.run`` on a small digits federation.

The budget checks are made against dp-accounting directly (events built here from
the reported noise multipliers), never through fedstrata's own accountant.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant

from fedstrata.api import RunResult, build_dataset, run
from fedstrata.config import FedConfig, load_config
from fedstrata.torch_adapter import TorchTrainerFactory

NUM_CLIENTS, PER_ROUND = 40, 8
Q = PER_ROUND / NUM_CLIENTS
EPSILON, DELTA = 1.0, 1e-5
INIT_SEED = 7


def make_config(*extra: str) -> FedConfig:
    """A small private federation: 40 digits clients, 8 sampled per round, logreg."""
    return load_config(
        overrides=[
            "data.name=digits",
            "data.partition=iid",
            f"data.num_clients={NUM_CLIENTS}",
            "model.kind=logreg",
            f"model.init_seed={INIT_SEED}",
            "client.epochs=null",
            "client.steps=2",
            "client.batch_size=8",
            "client.lr=0.1",
            f"rounds.clients_per_round={PER_ROUND}",
            "rounds.rounds=10",
            "privacy.mechanism=central",
            f"privacy.epsilon={EPSILON}",
            f"privacy.delta={DELTA}",
            "privacy.clip_norm=1.0",
            "sim.workers=0",
            "output.run_store=false",
            "output.progress=false",
            *extra,
        ]
    )


def reference_epsilon(sigmas: Sequence[float]) -> float:
    """ε of Poisson-sampled Gaussian rounds, composed by dp-accounting's PLD (1e-4)."""
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for sigma, count in Counter(sigmas).items():  # composition commutes
        accountant.compose(dpa.PoissonSampledDpEvent(Q, dpa.GaussianDpEvent(sigma)), count)
    return float(accountant.get_epsilon(DELTA))


def stat(result: RunResult, key: str) -> list[float]:
    """Per round, ``family.field`` of the typed records (``privacy.epsilon_spent``)."""
    family, name = key.split(".")
    return [getattr(getattr(m, family), name) for m in result.simulation.rounds]


PLANNED = {"uniform": 4, "staged": 6}


@pytest.fixture(scope="module", params=sorted(PLANNED))
def stopped(request: pytest.FixtureRequest) -> tuple[str, RunResult]:
    """(schedule, result): budget planned over 4 rounds (staged: 6), 10 rounds asked for."""
    schedule: str = request.param
    planned = f"privacy.planned_rounds={PLANNED[schedule]}"
    return schedule, run(make_config(f"privacy.schedule={schedule}", planned))


@pytest.fixture(scope="module")
def stopped_run(stopped: tuple[str, RunResult]) -> RunResult:
    return stopped[1]


def test_halts_at_the_last_round_that_fits_the_budget(stopped_run: RunResult) -> None:
    sigmas = stat(stopped_run, "privacy.noise_multiplier")
    # Rounds past the plan keep the last stage's multiplier; find the largest h whose
    # composed ε (dp-accounting directly) is within the budget.
    # ε grows with h, so h is the largest when h fits and h + 1 does not.
    h = len(stopped_run.simulation.rounds)
    assert 1 <= h < 10
    assert reference_epsilon(sigmas) <= EPSILON
    assert reference_epsilon([*sigmas, sigmas[-1]]) > EPSILON
    reason = stopped_run.simulation.stopped_reason
    assert reason is not None
    assert "budget" in reason
    assert f"after {h} rounds" in reason


def test_epsilon_is_non_decreasing_within_budget_and_matches_dp_accounting(
    stopped_run: RunResult,
) -> None:
    eps = stat(stopped_run, "privacy.epsilon_spent")
    sigmas = stat(stopped_run, "privacy.noise_multiplier")
    assert all(a <= b for a, b in itertools.pairwise(eps))
    assert max(eps) <= EPSILON
    for h in (1, len(eps)):
        ref = reference_epsilon(sigmas[:h])
        assert eps[h - 1] == pytest.approx(ref, rel=0.01)
    remaining = stat(stopped_run, "privacy.epsilon_remaining")
    assert remaining == pytest.approx([EPSILON - e for e in eps])


def test_noise_follows_the_schedule(stopped: tuple[str, RunResult]) -> None:
    schedule, result = stopped
    stages = stat(result, "privacy.stage")
    sigmas = stat(result, "privacy.noise_multiplier")
    if schedule == "uniform":
        assert set(stages) == {0.0}
        assert len(set(sigmas)) == 1
        return
    assert stages == sorted(stages)
    assert set(stages) == {0.0, 1.0, 2.0}
    by_stage = {s: {x for x, t in zip(sigmas, stages, strict=True) if t == s} for s in stages}
    assert all(len(v) == 1 for v in by_stage.values())
    # weights 0.3 / 0.5 / 0.2: the middle stage has the least noise, the last the most
    first, middle, last = (by_stage[s].pop() for s in sorted(by_stage))
    assert middle < first < last


def test_run_store_records_the_stop(tmp_path: Path) -> None:
    config = make_config(
        "privacy.schedule=uniform",
        "privacy.planned_rounds=3",
        "rounds.rounds=5",
        "output.run_store=true",
        f"output.dir={tmp_path}",
        "output.report=false",
    )
    result = run(config)
    assert result.run_dir is not None
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert summary["stop_reason"] == result.simulation.stopped_reason
    assert "budget" in summary["stop_reason"]
    assert summary["rounds"] == len(result.simulation.rounds) == 3
    assert summary["final_stats"]["privacy"]["epsilon_spent"] <= EPSILON


def test_completed_run_within_plan_is_not_stopped() -> None:
    result = run(make_config("privacy.schedule=uniform", "rounds.rounds=3"))
    assert result.simulation.stopped_reason is None
    assert len(result.simulation.rounds) == 3
    assert stat(result, "privacy.epsilon_spent")[-1] == pytest.approx(EPSILON, rel=0.01)


def _initial_params(config: FedConfig) -> np.ndarray:
    dataset = build_dataset(config.data)
    factory = TorchTrainerFactory(
        model=config.model.kind,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        hidden=config.model.hidden,
    )
    return factory().initial_params(INIT_SEED)


def test_tiny_clip_norm_barely_moves_the_model() -> None:
    rounds = 3
    tiny = make_config("privacy.clip_norm=1e-6", f"rounds.rounds={rounds}")
    normal = make_config(f"rounds.rounds={rounds}")
    init = _initial_params(tiny)
    moved_tiny = float(np.linalg.norm(run(tiny).simulation.params - init))
    moved_normal = float(np.linalg.norm(run(normal).simulation.params - init))
    # Per round: (sum of <= cohort updates of norm <= C + noise of std sigma C) / (q N).
    sigma_bound, cohort_bound = 10.0, NUM_CLIENTS
    dim = init.size
    bound = rounds * 1e-6 * (cohort_bound + 5 * sigma_bound * math.sqrt(dim)) / PER_ROUND
    assert moved_tiny <= bound
    assert moved_normal > 100 * moved_tiny


def test_results_identical_in_process_and_with_a_worker() -> None:
    runs = [run(make_config("rounds.rounds=3", f"sim.workers={w}")) for w in (0, 1)]
    assert [r.workers for r in runs] == [0, 1]
    inproc, forked = (r.simulation for r in runs)
    assert np.array_equal(inproc.params, forked.params)
    assert [m.accuracy for m in inproc.rounds] == [m.accuracy for m in forked.rounds]
    for a, b in zip(inproc.rounds, forked.rounds, strict=True):
        assert a.privacy.epsilon_spent == b.privacy.epsilon_spent
        assert a.privacy.noise_multiplier == b.privacy.noise_multiplier
        assert a.clients_completed == b.clients_completed
