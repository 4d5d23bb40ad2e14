"""The center's run directory evaluates with the simulator's rule (coordinator.cadence):
a task without accuracy and with its own metrics is recorded, not refused."""

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from fedstrata.config import load_config
from fedstrata.coordinator.events import RoundOutcome
from fedstrata.core.training import EvalResult
from fedstrata.monitoring import RunStore
from fedstrata.runtime.recorder import RunRecorder
from fedstrata.runtime.records import RoundRecord


@dataclass
class _RegressionTrainer:
    """Evaluates like a task that defines no accuracy but reports its own metric."""

    spec: object = None
    calls: list[int] = field(default_factory=list)

    def evaluate(self, params, data):
        self.calls.append(len(data))
        return EvalResult(loss=0.25, accuracy=float("nan"), num_examples=4, metrics={"mae": 0.5})


def test_a_task_without_accuracy_is_recorded_with_its_own_metrics(tmp_path):
    config = load_config(overrides=["rounds.rounds=2", "rounds.eval_every=1"])
    trainer = _RegressionTrainer()
    dep = SimpleNamespace(config=config, trainer=trainer, test_data=lambda: [0, 1, 2, 3])
    with RunStore.create(tmp_path / "run") as store:
        recorder = RunRecorder(dep, store, clock=iter(range(100)).__next__)  # type: ignore[arg-type]
        outcome = RoundOutcome(0, 3, (0, 1), ((2, "late"),), (), 1.0, True)
        metrics = recorder._metrics(0, RoundRecord(outcome, 10, 20, 0.3), np.zeros(3), 1.0, 1.0)
    assert metrics.accuracy is None  # NaN: the task defines none (it was refused before)
    assert metrics.loss == 0.25
    assert dict(metrics.extras) == {"test_mae": 0.5}
    assert (metrics.clients_completed, metrics.clients_failed) == (2, 1)
    assert trainer.calls == [4]
