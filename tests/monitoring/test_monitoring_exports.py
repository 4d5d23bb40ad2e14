"""TensorBoard and MLflow sinks: written, read back with each tool's own reader."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fedstrata.errors import MissingDependencyError
from fedstrata.monitoring import Alert, RoundMetrics, RunFinished, RunStarted, RunStatus
from fedstrata.monitoring.exports import MLflowSink, TensorBoardSink
from fedstrata.monitoring.live import alert_rows

MakeMetrics = Callable[..., RoundMetrics]


def _rounds(make_metrics: MakeMetrics, n: int = 3) -> list[RoundMetrics]:
    return [make_metrics(r, accuracy=None if r == 1 else 0.5 + 0.1 * r) for r in range(n)]


def test_tensorboard_event_files_read_back(tmp_path: Path, make_metrics: MakeMetrics) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rounds = _rounds(make_metrics)
    sink = TensorBoardSink(tmp_path / "tb")
    for m in rounds:
        sink.emit(m)
    sink.emit(Alert("SyncShareHigh", 2, 0.9, "warning", "msg"))
    sink.close()
    sink.close()  # idempotent
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"quality/accuracy", "quality/loss", "train/loss"} <= tags
    assert "reliability/completion_rate" in tags
    assert "communication/sync_share" in tags
    accuracy = [(e.step, round(e.value, 6)) for e in acc.Scalars("quality/accuracy")]
    assert accuracy == [(0, 0.5), (2, 0.7)]  # round 1 was not evaluated: not written
    rows = alert_rows(rounds)
    sync = [e.value for e in acc.Scalars("communication/sync_share")]
    assert sync == pytest.approx([row["sync_share"] for row in rows])
    assert [e.value for e in acc.Scalars("alerts/SyncShareHigh")] == pytest.approx([0.9])
    assert "compute/flop_efficiency" not in tags  # None in every round: never written


def test_mlflow_run_reads_back(tmp_path: Path, make_metrics: MakeMetrics) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rounds = _rounds(make_metrics)
    sink = MLflowSink(uri, "demo-run", experiment="fedstrata-test")
    sink.emit(RunStarted("demo-run", "rounds: 3\n", num_clients=10, num_params=42))
    for m in rounds:
        sink.emit(m)
    sink.emit(Alert("CompletionRateLow", 1, 0.8, "warning", "completion fell"))
    finished = RunFinished("demo-run", RunStatus.COMPLETED, 3, 0.7, 0.7, 0.5, 30.0, 1.0, 6000,
                           12000)  # fmt: skip
    sink.emit(finished)
    sink.close()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(sink.run_id)
    assert run.info.run_name == "demo-run"
    assert run.info.status == "FINISHED"
    assert run.data.params == {"num_clients": "10", "num_params": "42"}
    assert run.data.tags["alert.CompletionRateLow"] == "completion fell"
    history = client.get_metric_history(sink.run_id, "quality/accuracy")
    assert sorted((m.step, round(m.value, 6)) for m in history) == [(0, 0.5), (2, 0.7)]
    completion = client.get_metric_history(sink.run_id, "reliability/completion_rate")
    assert [m.value for m in sorted(completion, key=lambda m: m.step)] == [0.8, 0.8, 0.8]
    again = MLflowSink(uri, "second", experiment="fedstrata-test")  # the experiment is reused
    again.close()
    assert client.get_run(again.run_id).info.experiment_id == run.info.experiment_id


@pytest.mark.parametrize(
    ("module", "build", "extra"),
    [
        ("tensorboard.summary.writer.event_file_writer",
         lambda p: TensorBoardSink(p / "tb"), "fedstrata[tensorboard]"),
        ("mlflow.tracking", lambda p: MLflowSink(f"sqlite:///{p}/m.db", "r"), "fedstrata[mlflow]"),
    ],
)  # fmt: skip
def test_a_missing_package_names_the_extra(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    build: Callable[[Path], object],
    extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(MissingDependencyError, match=re.escape(f"pip install {extra!r}")):
        build(tmp_path)
