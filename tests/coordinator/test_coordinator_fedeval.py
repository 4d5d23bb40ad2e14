"""Federated evaluation's shared rules (``coordinator.fedeval``): the sample, a client's
metrics and the round's event, called by the simulator and the runtime alike."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.coordinator.fedeval import (
    FAILURE_PREFIX,
    FedEvalSettings,
    client_evaluation,
    evaluation_sample,
    fed_eval_event,
)
from fedstrata.core.training import EvalResult
from fedstrata.errors import ConfigError, DataError
from fedstrata.monitoring import ClientEval, ClientFailure, MemorySink


@settings(max_examples=60, deadline=None)
@given(
    eligible=st.lists(st.integers(0, 500), min_size=1, max_size=40, unique=True),
    size=st.integers(1, 50),
    seed=st.integers(0, 2**31),
    round_idx=st.integers(0, 1000),
)
def test_the_sample_is_a_sorted_seeded_subset_of_the_eligible(eligible, size, seed, round_idx):
    pool = np.array(sorted(eligible), dtype=np.intp)
    s = FedEvalSettings(1, size, seed)
    first = evaluation_sample(s, pool, round_idx)
    assert first.size == min(size, pool.size)
    assert np.all(np.diff(first) > 0)
    assert set(first.tolist()) <= set(pool.tolist())
    assert np.array_equal(first, evaluation_sample(s, pool, round_idx))  # reproducible


def test_the_sample_depends_on_the_round_and_the_seed():
    pool = np.arange(100, dtype=np.intp)
    draws = {tuple(evaluation_sample(FedEvalSettings(1, 5, 7), pool, r)) for r in range(6)}
    assert len(draws) > 1
    other = evaluation_sample(FedEvalSettings(1, 5, 8), pool, 0)
    assert not np.array_equal(other, evaluation_sample(FedEvalSettings(1, 5, 7), pool, 0))


def test_cadence_and_settings_are_checked():
    assert FedEvalSettings(3, 1).due(2, last=False)
    assert not FedEvalSettings(3, 1).due(0, last=False)
    assert FedEvalSettings(3, 1).due(0, last=True)
    with pytest.raises(ConfigError, match="sample_size"):
        FedEvalSettings(1, 0)


class _Trainer:
    def __init__(self, metrics: dict[str, float]) -> None:
        self.metrics = metrics

    def evaluate(self, params, data) -> EvalResult:
        return EvalResult(
            loss=float(params.sum()), accuracy=0.5, num_examples=len(data), metrics=self.metrics
        )


def test_a_client_reports_the_tasks_metrics_else_loss_and_accuracy():
    params = np.ones(3, dtype=np.float32)
    assert client_evaluation(_Trainer({}), params, [0, 1]) == (2, {"loss": 3.0, "accuracy": 0.5})  # type: ignore[arg-type]
    n, metrics = client_evaluation(_Trainer({"auc": 0.9}), params, [0, 1, 2])  # type: ignore[arg-type]
    assert (n, metrics) == (3, {"auc": 0.9})
    with pytest.raises(DataError, match="no evaluation examples"):
        client_evaluation(_Trainer({}), params, [])  # type: ignore[arg-type]


def test_the_event_counts_failures_and_emits_them_prefixed():
    sink = MemorySink()
    results = [ClientEval(4, 10, {"accuracy": 0.5}), ClientEval(1, 30, {"accuracy": 1.0})]
    event, failed = fed_eval_event(2, 3, results, [(7, "disk full")], wall_s=0.1, sinks=(sink,))
    assert event.clients_selected == 3
    assert event.clients_failed == 1
    assert [r.client_id for r in event.results] == [1, 4]
    acc = event.get("accuracy")
    assert acc is not None
    assert acc.mean == pytest.approx((0.5 * 10 + 30) / 40)
    assert failed == (ClientFailure(2, 7, f"{FAILURE_PREFIX}disk full"),)
    assert list(sink.events) == list(failed)
