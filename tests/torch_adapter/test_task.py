"""Issue 14 parts 1 and 9: the Task API in the trainer, and clear errors for bad user code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedstrata.core import LocalPlan, RoundContext
from fedstrata.errors import ConfigError, TaskError
from fedstrata.torch_adapter import (
    LocalTraining,
    Task,
    TaskPopulation,
    TaskTrainerFactory,
    TorchTrainer,
    TorchTrainerFactory,
    resolve_task,
)
from fedstrata.torch_adapter.binding import shapes_of

DIM, CLASSES = 6, 3
PLAN = LocalPlan(batch_size=4, lr=0.1, epochs=2)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(DIM, 8), nn.ReLU(), nn.Linear(8, CLASSES))


class BNNet(nn.Module):
    """Batch norm (aggregated buffers), a frozen embedding-like layer, two heads."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(DIM, DIM)
        self.frozen.requires_grad_(False)
        self.bn = nn.BatchNorm1d(DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.frozen(x)))


def arrays(cid: int, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cid)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def ctx(client: int = 1) -> object:
    return RoundContext(0, root_seed=3).for_client(client)


def train(trainer: TorchTrainer, data: object, client: int = 1) -> np.ndarray:
    params = trainer.initial_params(0)
    out = np.empty_like(params)
    trainer.train(params, data, PLAN, ctx(client), out)  # type: ignore[arg-type]
    return out


def test_plain_sgd_task_equals_builtin_bit_for_bit() -> None:
    """Part 1: a user nn.Module with the default loop is the built-in MLP's fast path."""
    builtin = TorchTrainerFactory("mlp", (DIM,), CLASSES, hidden=8, torch_threads=None)()
    task = TorchTrainer(Task(model=mlp))
    assert task.task.plain_sgd
    x, y = arrays(0)
    from fedstrata.core import ArrayDataset

    np.testing.assert_array_equal(task.initial_params(5), builtin.initial_params(5))
    assert train(task, (x, y)).tobytes() == train(builtin, ArrayDataset(x, y)).tobytes()


def test_torch_optim_sgd_task_equals_the_fast_path() -> None:
    """Part 1: Task.optimizer = torch.optim.SGD gives the same bits as the flat SGD."""
    fast = TorchTrainer(Task(model=mlp))
    optim = TorchTrainer(Task(model=mlp, optimizer=lambda p: torch.optim.SGD(p, lr=PLAN.lr)))
    data = arrays(2)
    assert train(fast, data).tobytes() == train(optim, data).tobytes()


def test_dataset_and_dataloader_data() -> None:
    """Part 1: a map-style Dataset and a DataLoader train too."""
    x, y = arrays(3)

    class Pairs(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
        def __len__(self) -> int:
            return len(y)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy(x[i]), torch.tensor(y[i])

    trainer = TorchTrainer(Task(model=mlp))
    params = trainer.initial_params(0)
    for data in (Pairs(), torch.utils.data.DataLoader(Pairs(), batch_size=5)):
        out = np.empty_like(params)
        result = trainer.train(params, data, PLAN, ctx(), out)  # type: ignore[arg-type]
        assert result.num_examples == 20
        assert np.abs(out).sum() > 0
    assert trainer.evaluate(params, Pairs()).num_examples == 20  # type: ignore[arg-type]


def test_buffers_aggregated_frozen_kept_and_local_buffers() -> None:
    """Part 1: BN statistics are global unless named in local_buffers; frozen weights stay."""
    trainer = TorchTrainer(Task(model=BNNet))
    names = trainer.spec.names
    trainable = ("bn.weight", "bn.bias", "head.weight", "head.bias")
    assert names[:4] == trainable  # trainable first, then frozen, then buffers
    assert names[4:6] == ("frozen.weight", "frozen.bias")
    assert "bn.running_mean" in names
    assert "bn.num_batches_tracked" not in names
    delta = train(trainer, arrays(4))
    off = dict(zip(names, trainer.spec.offsets, strict=True))
    assert np.all(delta[off["frozen.weight"] : off["frozen.weight"] + DIM * DIM] == 0)
    assert np.any(delta[off["bn.running_mean"] : off["bn.running_mean"] + DIM] != 0)
    local = TorchTrainer(Task(model=BNNet, local_buffers=("bn",)))
    assert not any(n.startswith("bn.running") for n in local.spec.names)


def test_custom_loop_gets_batches_optimizer_and_reports_metrics() -> None:
    """Part 1: a user loop (clipping, early stop) drives training and returns metrics."""

    def loop(model: nn.Module, data: object, c: LocalTraining) -> dict[str, float]:
        for i, (x, y) in enumerate(c.batches()):
            c.optimizer.zero_grad()
            c.loss(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
            c.optimizer.step()
            if i == 2:
                break
        return {"stopped_at": float(c.steps)}

    trainer = TorchTrainer(Task(model=mlp, train=loop))
    params = trainer.initial_params(0)
    out = np.empty_like(params)
    result = trainer.train(params, arrays(5), PLAN, ctx(), out)  # type: ignore[arg-type]
    assert result.metrics["stopped_at"] == 3
    assert result.num_steps == 3
    assert np.abs(out).sum() > 0


def test_evaluate_returns_named_metrics() -> None:
    """Part 1: Task.evaluate's metrics reach EvalResult.metrics."""

    def metrics(model: nn.Module, data: object) -> dict[str, float]:
        return {"accuracy": 0.5, "f1": 0.25, "auc": 0.75}

    trainer = TorchTrainer(Task(model=mlp, evaluate=metrics))
    ev = trainer.evaluate(trainer.initial_params(0), arrays(6))  # type: ignore[arg-type]
    assert ev.accuracy == 0.5
    assert ev.metrics["auc"] == 0.75
    assert np.isnan(ev.loss)


def test_factory_returning_non_module_is_named() -> None:
    """Part 9: a model factory returning something else."""

    def factory() -> nn.Module:
        return 42  # type: ignore[return-value]

    with pytest.raises(TaskError, match=r"test_task\..*factory returned int, not a torch.nn"):
        TorchTrainer(Task(model=factory))


def test_bad_data_is_named() -> None:
    """Part 9: wrong dtype and wrong shape name the user's data function."""

    def strings(cid: int) -> tuple[np.ndarray, np.ndarray]:
        return np.array([["a"] * DIM] * 3), np.zeros(3, np.int64)

    def wrong_shape(cid: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((3, DIM + 1), np.float32), np.zeros(3, np.int64)

    trainer = TorchTrainer(Task(model=mlp))
    with pytest.raises(TaskError, match=r"strings\(0\) returned x of dtype <U1"):
        TaskPopulation(Task(model=mlp, client_data=strings, num_clients=2)).client(0)
    data = TaskPopulation(Task(model=mlp, client_data=wrong_shape, num_clients=2)).client(1)
    with pytest.raises(
        TaskError, match=r"wrong_shape\(1\) \(x: shape \(3, 7\) float32.*mat1 and mat2"
    ):
        train(trainer, data)


def test_loop_raising_or_nan_or_replacing_a_layer_is_named() -> None:
    """Part 9: a loop that raises, yields NaN, or changes parameter shapes."""

    def boom(model: nn.Module, data: object, c: LocalTraining) -> None:
        raise ValueError("bad branch")

    def nan(model: nn.Module, data: object, c: LocalTraining) -> None:
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))

    def widen(model: nn.Module, data: object, c: LocalTraining) -> None:
        model[2] = nn.Linear(8, CLASSES + 1)  # type: ignore[index]

    for loop, pattern in [
        (boom, r"Task.train .*boom raised ValueError: bad branch"),
        (nan, r"Task.train .*nan produced NaN/Inf parameters on client 1"),
        (widen, r"replaced the model's '2.weight' .*\(3, 8\), the client's is shape \(4, 8\)"),
    ]:
        with pytest.raises(TaskError, match=pattern):
            train(TorchTrainer(Task(model=mlp, train=loop)), arrays(7))


def test_worker_model_differing_from_the_global_one_fails_its_clients() -> None:
    """Part 9: parameter shapes differing between processes: every client fails clearly."""
    expected = shapes_of(TorchTrainer(Task(model=BNNet)).spec)
    trainer = TaskTrainerFactory(Task(model=mlp), torch_threads=None, expected=expected)()
    with pytest.raises(TaskError, match="built a different model here"):
        train(trainer, arrays(8))


def test_resolve_task_errors(tmp_path: pytest.TempPathFactory) -> None:
    """Part 9: a task module that fails to import, a missing attribute, not a Task."""
    root = tmp_path  # type: ignore[assignment]
    (root / "broken_task.py").write_text("import torch\n1 / 0\n")  # type: ignore[operator]
    (root / "fine_task.py").write_text("x = 3\n")  # type: ignore[operator]
    with pytest.raises(TaskError, match="importing broken_task failed: ZeroDivisionError"):
        resolve_task("broken_task:t", root)  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="no module named 'nowhere_mod'"):
        resolve_task("nowhere_mod:t", root)  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="has no attribute 'missing'"):
        resolve_task("fine_task:missing", root)  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="is a int, not a fedstrata"):
        resolve_task("fine_task:x", root)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"package\.module:attribute"):
        resolve_task("no_colon")
    with pytest.raises(ConfigError, match="num_clients"):
        Task(model=mlp, client_data=arrays)


def test_plain_sgd_probe_puts_torch_sgd_tasks_on_the_fast_path() -> None:
    """Part 1: a task whose optimizer is a plain torch.optim.SGD trains on the flat path,
    bit-identical to the real optimizer; other optimizers are left alone."""
    from fedstrata.torch_adapter.probe import SgdSettings, plain_sgd

    def sgd(p: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(p, lr=0.07, momentum=0.9, weight_decay=1e-3)

    task = Task(model=mlp, optimizer=sgd)
    settings = plain_sgd(task)
    assert settings == SgdSettings(0.07, 0.9, 1e-3)
    fast = TaskTrainerFactory(task, torch_threads=None, sgd=settings)()
    slow = TorchTrainer(task)
    data = arrays(9)
    assert train(fast, data).tobytes() == train(slow, data).tobytes()
    for other in (
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        lambda p: torch.optim.Adam(p, lr=0.1),
    ):
        assert plain_sgd(Task(model=mlp, optimizer=other)) is None


def test_custom_loop_with_plain_sgd_gets_flat_sgd_with_the_same_bits() -> None:
    """Part 1: a custom loop over a probed plain SGD gets FlatSGD; same arithmetic even
    when the loop detaches gradients with model.zero_grad() or changes lr mid-way."""
    from fedstrata.torch_adapter.flatsgd import FlatSGD
    from fedstrata.torch_adapter.probe import plain_sgd

    seen: list[type] = []

    def loop(model: nn.Module, data: object, c: LocalTraining) -> None:
        seen.append(type(c.optimizer))
        for i, (x, y) in enumerate(c.batches()):
            model.zero_grad()  # set_to_none: grads leave the flat gradient
            c.loss(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            if i == 3:
                c.optimizer.param_groups[0]["lr"] = 0.01
            c.optimizer.step()

    def sgd(p: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2)

    task = Task(model=mlp, optimizer=sgd, train=loop)
    flat = TaskTrainerFactory(task, torch_threads=None, sgd=plain_sgd(task))()
    real = TorchTrainer(task)
    data = arrays(10)
    assert train(flat, data).tobytes() == train(real, data).tobytes()
    assert seen == [FlatSGD, torch.optim.SGD]


class TextNet(nn.Module):
    """Embedding + LSTM + a head: token ids in, logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out[:, -1])


def test_embedding_and_lstm_train_through_the_flat_vector() -> None:
    """Part 1: integer inputs (token ids), an embedding and an LSTM train through the
    flat vector: the LSTM's weights change in the delta."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (12, 5)).astype(np.int64)
    y = rng.integers(0, CLASSES, 12).astype(np.int64)
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    trainer = TorchTrainer(Task(model=TextNet, optimizer=sgd))
    delta = train(trainer, (x, y))
    assert np.abs(delta).sum() > 0
    names = trainer.spec.names
    lstm_w = names.index("lstm.weight_ih_l0")
    off, size = trainer.spec.offsets[lstm_w], 4 * 8 * 8
    assert np.abs(delta[off : off + size]).sum() > 0


def test_declared_client_sizes_skip_loading_and_are_checked() -> None:
    """Part 1: Task.client_sizes avoids loading every client at start-up."""
    loads: list[int] = []

    def data(cid: int) -> tuple[np.ndarray, np.ndarray]:
        loads.append(cid)
        return arrays(cid, 10 + cid)

    def sizes() -> list[int]:
        return [10 + c for c in range(4)]

    population = TaskPopulation(
        Task(model=mlp, client_data=data, num_clients=4, client_sizes=sizes)
    )
    assert population.client_sizes().tolist() == [10, 11, 12, 13]
    assert loads == []
    bad = TaskPopulation(
        Task(model=mlp, client_data=data, num_clients=3, client_sizes=lambda: [1, 2])
    )
    with pytest.raises(TaskError, match=r"client_sizes .* returned shape \(2,\); expected 3"):
        bad.client_sizes()


@pytest.mark.usefixtures("fresh_imports")
def test_a_second_project_with_the_same_module_name_is_refused(tmp_path: Path) -> None:
    """Part 9: Python caches modules by name; a second project whose task module has
    the name of one already imported must not silently get the first project's task."""
    source = (
        "from torch import nn\nfrom fedstrata.torch_adapter import Task\n"
        "t = Task(model=lambda: nn.Linear(2, 2), name={name!r})\n"
    )
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "same_name_task.py").write_text(source.format(name=name))
    assert resolve_task("same_name_task:t", tmp_path / "a").name == "a"
    assert resolve_task("same_name_task:t", tmp_path / "a").name == "a"  # same project: fine
    with pytest.raises(TaskError, match=r"already imported from .*a/same_name_task\.py"):
        resolve_task("same_name_task:t", tmp_path / "b")
