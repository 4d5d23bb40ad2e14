"""Issue 14 part 3: federated evaluation runs in the worker pool like training."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest
from simfakes import FakeData, FakeFactory, FakeTrainer

from fedstrata.algorithms import FedAvg
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core import LocalPlan
from fedstrata.errors import ConfigError
from fedstrata.monitoring import ClientFailure, FedEvalMetrics, MemorySink
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
    Simulation,
)
from fedstrata.sim.fedeval import FederatedEvaluator, FedEvalSettings


class HeldOut(FakeData):
    """Each client's held-out data: other examples than its training data."""

    def client(self, client_id: int):  # type: ignore[override]
        if client_id == 7:
            raise OSError("held-out file missing")
        data = super().client(client_id)
        return type(data)(data.x + np.float32(0.5), data.y)


def run_with_fed_eval(workers: int, *, every: int = 2, sample: int = 5, rounds: int = 5):
    data, held = FakeData(), HeldOut()
    job = ClientJob(FakeFactory(), data, root_seed=5, eval_data=held)
    executor = InProcessExecutor(job, 4) if workers == 0 else ProcessExecutor(job, 4, workers)
    sink = MemorySink()
    evaluator = FederatedEvaluator(FedEvalSettings(every, sample, 5), np.arange(12))
    sim = Simulation(
        settings=SimSettings(rounds, LocalPlan(lr=0.5), root_seed=5),
        coordinator=RoundCoordinator(RoundPolicy(4, 1, None, 5)),
        trainer=FakeTrainer(),
        executor=executor,
        client_sizes=data.client_sizes(),
        test_data=None,
        profiles=ProfileTable.generate(12, ProfileDistribution(), np.random.default_rng(0)),
        server_optimizer=FedAvg(),
        sinks=(sink,),
        fed_eval=evaluator,
    )
    try:
        params = FakeTrainer().initial_params(1)
        return sim.run(params), sink, evaluator
    finally:
        executor.close()


def test_flat_simulation_evaluates_every_n_rounds_on_held_out_data() -> None:
    """Issue 14 part 3: values equal a direct per-client evaluation of the final model."""
    result, sink, evaluator = run_with_fed_eval(0)
    assert [e.round_idx for e in result.fed_evals] == [1, 3, 4]  # every 2nd and the last
    last = result.fed_evals[-1]
    ids = evaluator.sample(4)
    assert len(ids) == 5
    assert list(ids) == sorted(ids)
    trainer, held = FakeTrainer(), HeldOut()
    direct = {int(c): trainer.evaluate(result.params, held.client(int(c))) for c in ids if c != 7}
    assert {r.client_id for r in last.results} == set(direct)
    for r in last.results:
        assert r.metrics["loss"] == pytest.approx(direct[r.client_id].loss)
        assert r.num_examples == direct[r.client_id].num_examples
    weights = np.array([direct[c].num_examples for c in sorted(direct)], dtype=float)
    losses = np.array([direct[c].loss for c in sorted(direct)])
    assert last.get("loss").mean == pytest.approx(float(losses @ weights / weights.sum()))  # type: ignore[union-attr]
    events = [e for e in sink.events if isinstance(e, FedEvalMetrics)]
    assert events == result.fed_evals


def test_a_failing_client_evaluation_is_counted_and_reported() -> None:
    result, sink, _ = run_with_fed_eval(0, every=1, sample=12, rounds=1)
    (event,) = result.fed_evals
    assert (event.clients_selected, event.clients_failed, len(event.results)) == (12, 1, 11)
    failures = [e for e in sink.events if isinstance(e, ClientFailure)]
    assert [f.client_id for f in failures] == [7]
    assert failures[0].reason.startswith("federated evaluation: OSError: held-out file missing")


def test_worker_processes_give_the_same_evaluations() -> None:
    """Evaluation tasks cross the worker pool (no vector comes back) bit for bit."""
    inproc, _, _ = run_with_fed_eval(0)
    forked, _, _ = run_with_fed_eval(2)
    untimed = [[replace(e, wall_s=0.0) for e in r.fed_evals] for r in (forked, inproc)]
    assert untimed[0] == untimed[1]
    np.testing.assert_array_equal(forked.params, inproc.params)


def test_sample_is_seeded_and_settings_are_checked() -> None:
    ev = FederatedEvaluator(FedEvalSettings(1, 3, 9), np.arange(10))
    assert list(ev.sample(2)) == list(ev.sample(2))
    assert not FedEvalSettings(3, 1).due(0, last=False)
    assert FedEvalSettings(3, 1).due(2, last=False)
    assert FedEvalSettings(3, 1).due(0, last=True)
    with pytest.raises(ConfigError, match="no client holds evaluation data"):
        FederatedEvaluator(FedEvalSettings(1, 1), np.array([], dtype=np.intp))
    with pytest.raises(ConfigError, match="every and sample_size"):
        FedEvalSettings(0, 1)


def test_ray_actors_evaluate_the_same(tmp_path_factory) -> None:
    """Evaluation tasks run on Ray actors too (a private local Ray, shut down after)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fedstrata[ray]')")
    from fedstrata.sim.ray_executor import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[FakeTrainer.__module__])
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        temp = str(tmp_path_factory.mktemp("ray"))  # short: Ray's socket paths are limited
        ray.init(address="local", include_dashboard=False, num_cpus=2, _temp_dir=temp,
                 configure_logging=False, log_to_driver=False)  # fmt: skip
        try:
            job = ClientJob(FakeFactory(), FakeData(), root_seed=5, eval_data=HeldOut())
            evaluator = FederatedEvaluator(FedEvalSettings(1, 12, 5), np.arange(12))
            params = FakeTrainer().initial_params(1)
            with RayExecutor(job, 4, num_actors=2) as ex:
                got = evaluator.run(ex, params, 0, ())
        finally:
            ray.shutdown()
    want = evaluator.run(InProcessExecutor(job, 4), params, 0, ())
    assert (got.results, got.distributions) == (want.results, want.distributions)
    assert got.clients_failed == 1
