"""The central-DP round hook: rounds below ``min_clients``, per-round q in the run store."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant

from fedstrata.api import build_dataset, run
from fedstrata.config import FedConfig, load_config
from fedstrata.core.context import RoundContext
from fedstrata.monitoring import RoundMetrics, RunStarted, RunStore
from fedstrata.privacy import BudgetAllocator, CentralGaussian
from fedstrata.privacy.hook import CentralDPHook
from fedstrata.torch_adapter import TorchTrainerFactory

DELTA = 1e-5


def small_config(*extra: str) -> FedConfig:
    """40 digits clients, Poisson cohorts, logreg, central DP at ε = 1."""
    return load_config(
        overrides=[
            "data.name=digits",
            "data.partition=iid",
            "data.num_clients=40",
            "model.kind=logreg",
            "model.init_seed=7",
            "client.epochs=null",
            "client.steps=2",
            "client.batch_size=8",
            "rounds.clients_per_round=8",
            "rounds.rounds=2",
            "privacy.mechanism=central",
            "privacy.epsilon=1.0",
            "privacy.schedule=uniform",
            f"privacy.delta={DELTA}",
            "sim.workers=0",
            "output.run_store=false",
            "output.progress=false",
            *extra,
        ]
    )


def initial_params(config: FedConfig) -> np.ndarray:
    dataset = build_dataset(config.data)
    factory = TorchTrainerFactory(
        model=config.model.kind,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        hidden=config.model.hidden,
    )
    return factory().initial_params(config.model.init_seed)


def reference_epsilon(events: list[tuple[float, float]]) -> float:
    """ε of Poisson-sampled Gaussian rounds ``(σ, q)``, by dp-accounting's PLD directly."""
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    for (sigma, q), count in Counter(events).items():
        accountant.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), count)
    return float(accountant.get_epsilon(DELTA))


def test_round_below_min_clients_is_noised_and_applied() -> None:
    """Issue 11 defect 14: a round with fewer than ``rounds.min_clients`` accepted
    updates used to leave the model unchanged (revealing the small cohort) while the
    accountant charged it as a normal round; now it is noised and applied."""
    config = small_config("rounds.min_clients=40")  # a Poisson cohort of 40 clients never comes
    result = run(config)
    rounds = result.simulation.rounds
    assert all(m.clients_completed < 40 for m in rounds)
    moved = float(np.linalg.norm(result.simulation.params - initial_params(config)))
    assert moved > 0.0
    assert [m.privacy.epsilon_spent for m in rounds] == sorted(
        m.privacy.epsilon_spent for m in rounds
    )


def test_round_with_no_update_applies_the_noise_alone() -> None:
    """Issue 11 defect 14: with nobody accepted the round still releases noise."""
    config = small_config("rounds.clients_per_round=1", "rounds.rounds=1", "seed=2")
    result = run(config)
    assert result.simulation.rounds[0].clients_completed == 0
    moved = result.simulation.params - initial_params(config)
    # the noise alone: std sigma * C / (q N) per coordinate, q N = 1 / 40 * 40
    sigma = result.simulation.rounds[0].privacy.noise_multiplier
    expected = sigma * config.privacy.clip_norm
    assert float(np.std(moved)) == pytest.approx(expected, rel=0.1)


def test_epsilon_recomputed_from_the_run_store_alone_when_q_varies(tmp_path: Path) -> None:
    """Issue 11 defect 15: the store keeps each round's q with its σ, so ε can be
    recomputed from the store alone when the sampling rate changes between rounds."""
    rates = [0.2, 0.1, 0.05, 0.2, 0.3, 0.1]
    allocator = BudgetAllocator(4.0, DELTA, len(rates), 0.2)
    hook = CentralDPHook(
        allocator, CentralGaussian(0.0, 1.0), 8.0, sampling_rate_of=rates.__getitem__
    )
    store = RunStore.create(tmp_path / "run")
    store.emit(RunStarted("run", "rounds: 6\n", 40, 4))
    for r in range(len(rates)):
        hook.start(r)
        hook.aggregate(np.zeros(4, np.float32), 3, RoundContext(r, 0))
        store.emit(_metrics(r).with_stats(hook.finish(r, 3, None)))
    store.close()
    stored = RunStore.open(tmp_path / "run").rounds()
    events = [(m.privacy.noise_multiplier, m.privacy.sampling_rate) for m in stored]
    assert [q for _, q in events] == rates
    reported = stored[-1].privacy.epsilon_spent
    assert reported == pytest.approx(reference_epsilon(events), rel=0.01)
    assert reported != pytest.approx(reference_epsilon([(s, 0.2) for s, _ in events]), rel=0.01)


def test_simulated_run_stores_q_with_sigma(tmp_path: Path) -> None:
    """Issue 11 defect 15: a simulated run with availability < 1 stores q per round
    and ε recomputed from the stored (σ, q) matches the run's reported ε."""
    config = small_config(
        "rounds.rounds=3",
        "devices.availability=0.6",
        "output.run_store=true",
        f"output.dir={tmp_path}",
        "output.report=false",
    )
    result = run(config)
    assert result.run_dir is not None
    stored = RunStore.open(result.run_dir).rounds()
    events = [(m.privacy.noise_multiplier, m.privacy.sampling_rate) for m in stored]
    assert {q for _, q in events} == {8 / 40}
    reported = result.simulation.rounds[-1].privacy.epsilon_spent
    assert reported == pytest.approx(reference_epsilon(events), rel=0.01)


def _metrics(round_idx: int) -> RoundMetrics:
    return RoundMetrics(
        round_idx=round_idx, accuracy=None, loss=None, train_loss=None, clients_selected=8,
        clients_completed=3, clients_failed=0, clients_late=0, bytes_up=0, bytes_down=0,
        sim_round_s=1.0, sim_time_s=float(round_idx + 1), wall_round_s=0.1, compute_s=0.5,
        downlink_s=0.2, uplink_s=0.3,
    )  # fmt: skip


def test_readme_dp_example_warns_that_noise_dwarfs_the_signal(caplog) -> None:
    """Issue 11 defect 20: before the run, a WARNING states how many times the noise
    std per coordinate exceeds the clipped mean update (README's DP example: ~20x)."""
    from fedstrata.api.components import pipeline, privacy_hooks

    config = load_config(
        preset="quickstart", overrides=["privacy.mechanism=central", "privacy.epsilon=2"]
    )
    size = 64 * 128 + 128 + 128 * 10 + 10  # the quickstart MLP
    caplog.set_level(logging.WARNING, logger="fedstrata.privacy.hook")
    (hook,) = privacy_hooks(config, pipeline(config, size, Path(".")), 100, size)
    (record,) = caplog.records
    ratio = hook.check_noise(size)
    assert 15 < ratio < 25
    assert f"is {ratio:.0f}x the largest clipped mean update per coordinate" in record.message
    assert "privacy.epsilon" in record.message


def test_no_warning_when_the_signal_is_not_dwarfed(caplog) -> None:
    """Issue 11 defect 20: a large cohort at a generous budget runs without the warning."""
    allocator = BudgetAllocator.uniform(8.0, DELTA, 10, 0.5)
    hook = CentralDPHook(allocator, CentralGaussian(0.0, 1.0), expected_cohort=500.0)
    caplog.set_level(logging.WARNING, logger="fedstrata.privacy.hook")
    assert hook.check_noise(650) < 1
    assert not caplog.records
