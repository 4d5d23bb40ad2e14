"""Issue 14 part 3: federated-evaluation events, their statistics, the run store and
the report."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

from fedstrata.errors import DataError
from fedstrata.monitoring import (
    ClientEval,
    FedEvalMetrics,
    RunStarted,
    RunStatus,
    RunStore,
    RunTotals,
    write_report,
)
from fedstrata.monitoring.fedeval import distribution, higher_is_better


def make_event(round_idx: int = 0) -> FedEvalMetrics:
    """Ten clients: accuracy 0.0, 0.1, ..., 0.9 with 1..10 examples; one NaN AUC."""
    results = [
        ClientEval(c, c + 1, {"accuracy": c / 10, "loss": 1.0 - c / 10, "auc": 0.5 + c / 40})
        for c in range(10)
    ]
    results[3] = ClientEval(3, 4, {"accuracy": 0.3, "loss": 0.7, "auc": math.nan})
    return FedEvalMetrics.from_results(round_idx, 11, results, wall_s=0.5)


def test_distribution_matches_a_direct_computation() -> None:
    """Issue 14 part 3: weighted mean, spread over clients, worst 10% (both directions)."""
    event = make_event()
    acc = event.get("accuracy")
    assert acc is not None
    values, weights = np.arange(10) / 10, np.arange(1, 11)
    assert acc.mean == pytest.approx(float(values @ weights / weights.sum()))
    assert acc.std == pytest.approx(float(values.std()))
    assert (acc.p10, acc.p50, acc.p90) == pytest.approx(tuple(np.percentile(values, [10, 50, 90])))
    assert (acc.min, acc.max, acc.clients, acc.examples) == (0.0, 0.9, 10, 55)
    assert acc.worst10 == 0.0
    assert acc.higher_is_better
    loss = event.get("loss")
    assert loss is not None
    assert not loss.higher_is_better
    assert loss.worst10 == pytest.approx(1.0)  # the highest loss
    auc = event.get("auc")
    assert auc is not None
    assert auc.clients == 9
    assert auc.examples == 51
    assert (event.clients_selected, event.clients_failed) == (11, 1)


def test_worst10_averages_the_worst_tenth_and_direction_follows_the_name() -> None:
    results = [ClientEval(c, 1, {"accuracy": float(c)}) for c in range(25)]
    dist = distribution("accuracy", results)
    assert dist is not None
    assert dist.worst10 == pytest.approx(1.0)
    assert distribution("missing", results) is None
    assert not higher_is_better("val_loss")
    assert not higher_is_better("mse")
    assert higher_is_better("accuracy")
    assert higher_is_better("auc")


def test_event_validation() -> None:
    two = (ClientEval(0, 1, {}), ClientEval(1, 1, {}))
    with pytest.raises(DataError, match="exceed clients_selected"):
        FedEvalMetrics(0, 1, 0, 0.0, two)
    with pytest.raises(DataError, match="clients_failed"):
        FedEvalMetrics.from_results(0, 1, two, 0.0)
    with pytest.raises(DataError, match="num_examples"):
        ClientEval(0, -1, {})
    with pytest.raises(DataError, match="numbers"):
        ClientEval(0, 1, {"accuracy": "high"})  # type: ignore[dict-item]


def _store_run(tmp_path, events):
    store = RunStore.create(tmp_path / "run")
    store.emit(RunStarted("run", "seed: 0\n", 10, 5))
    for event in events:
        store.emit(event)
    totals = RunTotals()
    store.emit(totals.finish("run", RunStatus.COMPLETED))
    store.close()
    return tmp_path / "run"


def test_run_store_round_trips_federated_evaluations(tmp_path) -> None:
    """Issue 14 part 3: typed rows in metrics.sqlite, read back exactly (NaN included)."""
    events = [make_event(0), make_event(4)]
    run_dir = _store_run(tmp_path, events)
    with RunStore.open(run_dir) as store:
        back = store.fed_evals()
        summary = store.summary()
    assert [e.round_idx for e in back] == [0, 4]
    for got, want in zip(back, events, strict=True):
        assert got.distributions == tuple(sorted(want.distributions, key=lambda d: d.metric))
        assert [r.client_id for r in got.results] == [r.client_id for r in want.results]
        assert math.isnan(got.results[3].metrics["auc"])
        assert got.results[5].metrics == want.results[5].metrics
        assert (got.clients_selected, got.clients_failed) == (11, 1)
    assert summary["final_fed_eval"]["round"] == 4
    assert summary["final_fed_eval"]["accuracy_worst10"] == 0.0
    conn = sqlite3.connect(run_dir / "metrics.sqlite")
    rows = conn.execute("SELECT metric, mean FROM fed_eval_metrics WHERE round_idx = 4").fetchall()
    conn.close()
    assert dict(rows)["accuracy"] == pytest.approx(events[1].get("accuracy").mean)  # type: ignore[union-attr]


def test_a_round_is_stored_once(tmp_path) -> None:
    with RunStore.create(tmp_path / "run") as store:
        store.emit(make_event(1))
        with pytest.raises(DataError, match="already stored"):
            store.emit(make_event(1))


def test_a_version_1_store_still_opens_without_federated_evaluation(tmp_path) -> None:
    """The schema change is additive: a store written before it reads as no evaluations."""
    run_dir = _store_run(tmp_path, [])
    conn = sqlite3.connect(run_dir / "metrics.sqlite")
    with conn:
        for table in ("fed_eval_rounds", "fed_eval_metrics", "fed_eval_clients"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("ALTER TABLE rounds DROP COLUMN stats")  # version 3 added it
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    with RunStore.open(run_dir) as store:
        assert store.fed_evals() == []
    write_report(run_dir)  # and the report renders


def test_report_has_a_federated_evaluation_section(tmp_path, make_metrics) -> None:
    """Issue 14 part 3: the report shows the weighted mean, worst 10% and spread."""
    store = RunStore.create(tmp_path / "run")
    for r in range(3):
        store.emit(make_metrics(r, accuracy=None, loss=None))
        store.emit(make_event(r))
    store.close()
    html = write_report(tmp_path / "run").read_text()
    assert "<h2>Federated evaluation</h2>" in html
    assert "worst 10%" in html
    assert "weighted mean" in html
    assert "Federated accuracy vs round" in html
    assert "auc per client, round 2" in html
    mean = make_event(2).get("accuracy").mean  # type: ignore[union-attr]
    assert f"{mean:.4g}" in html
