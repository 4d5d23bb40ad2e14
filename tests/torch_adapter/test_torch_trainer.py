"""TorchTrainer: flat aliasing, exact SGD arithmetic, FedProx, evaluation, factory."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fedstrata.core import ArrayDataset, ClientContext, LocalPlan, OptimizerKind, RoundContext
from fedstrata.errors import ConfigError, DataError, ShapeError
from fedstrata.torch_adapter import ShuffleSeeding, TorchTrainer, TorchTrainerFactory

DIM, CLASSES, HIDDEN = 6, 3, 8


def make_data(n: int = 29, seed: int = 0) -> ArrayDataset:
    """A learnable toy problem: the label is the argmax of a fixed linear map."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    w = np.random.default_rng(99).standard_normal((DIM, CLASSES))
    return ArrayDataset(x=x, y=np.argmax(x @ w, axis=1).astype(np.int64))


def make_trainer(kind: str = "mlp") -> TorchTrainer:
    return TorchTrainerFactory(kind, (DIM,), CLASSES, hidden=HIDDEN, torch_threads=None)()


def ctx(round_idx: int = 0, client: int = 3) -> ClientContext:
    return RoundContext(round_idx, root_seed=11).for_client(client)


def train(
    trainer: TorchTrainer,
    params: np.ndarray,
    data: ArrayDataset,
    plan: LocalPlan,
    c: ClientContext | None = None,
) -> tuple[np.ndarray, object]:
    out = np.empty_like(params)
    result = trainer.train(params, data, plan, c or ctx(), out)
    return out, result


def test_flat_vector_aliases_the_model() -> None:
    trainer = make_trainer()
    trainer.flat_np[:] = np.arange(trainer.spec.size, dtype=np.float32)
    params = list(trainer.model.parameters())
    first = params[0]
    assert first.data_ptr() == trainer.flat.data_ptr()
    np.testing.assert_array_equal(first.detach().numpy().ravel(), trainer.flat_np[: first.numel()])
    with torch.no_grad():
        params[-1].fill_(-5.0)
    assert np.all(trainer.flat_np[-params[-1].numel() :] == -5.0)
    names = [n for n, _ in trainer.model.named_parameters()]
    assert list(trainer.spec.names) == names


def test_gradients_land_in_the_flat_gradient() -> None:
    trainer = make_trainer()
    trainer.initial_params(0)
    data = make_data()
    loss = nn.functional.cross_entropy(
        trainer.model(torch.from_numpy(data.x)), torch.from_numpy(data.y)
    )
    trainer.grad.zero_()
    loss.backward()
    per_param = np.concatenate([p.grad.numpy().ravel() for p in trainer.model.parameters()])
    np.testing.assert_array_equal(trainer.grad.numpy(), per_param)
    assert np.abs(per_param).sum() > 0


def test_training_reduces_loss_and_reports() -> None:
    trainer, data = make_trainer(), make_data(64)
    params = trainer.initial_params(1)
    before = trainer.evaluate(params, data)
    plan = LocalPlan(batch_size=8, lr=0.2, epochs=20)
    delta, result = train(trainer, params, data, plan)
    after = trainer.evaluate(params + delta, data)
    assert after.loss < 0.5 * before.loss
    assert after.accuracy > before.accuracy
    assert result.num_examples == 64
    assert result.num_steps == 20 * 8
    assert 0 < result.metrics["train_loss"] < before.loss


def test_same_seed_gives_bit_identical_delta() -> None:
    data, plan = make_data(), LocalPlan(batch_size=4, lr=0.1, epochs=2, momentum=0.9)
    a, b = make_trainer(), make_trainer()
    params = a.initial_params(0)
    d1, _ = train(a, params, data, plan)
    train(a, params, make_data(seed=5), plan, ctx(1, 9))  # state must not leak between calls
    d2, _ = train(a, params, data, plan)
    d3, _ = train(b, params, data, plan)
    assert d1.tobytes() == d2.tobytes() == d3.tobytes()
    d4, _ = train(a, params, data, plan, ctx(round_idx=1))
    assert not np.array_equal(d1, d4)


def _reference_delta(
    params: np.ndarray, data: ArrayDataset, plan: LocalPlan, seed: int, opt_kind: str = "sgd"
) -> np.ndarray:
    """The plain torch loop: a fresh module, torch.optim, randperm shuffling."""
    model = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
    flat = torch.from_numpy(params.copy())
    torch.nn.utils.vector_to_parameters(flat, model.parameters())
    start = [p.detach().clone() for p in model.parameters()]
    if opt_kind == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=plan.lr, momentum=plan.momentum, weight_decay=plan.weight_decay
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    steps, epochs = 0, 0
    while True:
        perm = torch.randperm(len(y), generator=gen)
        for s in range(0, len(y), plan.batch_size):
            idx = perm[s : s + plan.batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            if plan.prox_mu:
                with torch.no_grad():
                    for p, p0 in zip(model.parameters(), start, strict=True):
                        p.grad.add_(p - p0, alpha=plan.prox_mu)
            opt.step()
            steps += 1
            if plan.steps is not None and steps == plan.steps:
                break
        epochs += 1
        if steps == plan.steps or epochs == plan.epochs:
            break
    new = torch.nn.utils.parameters_to_vector(model.parameters()).detach().numpy()
    return new - params


@pytest.mark.parametrize(
    "plan",
    [
        LocalPlan(batch_size=8, lr=0.05, epochs=1),
        LocalPlan(batch_size=5, lr=0.1, epochs=3, momentum=0.9, weight_decay=1e-3),
        LocalPlan(batch_size=4, lr=0.07, epochs=None, steps=17, momentum=0.5, weight_decay=0.01),
        LocalPlan(batch_size=8, lr=0.05, epochs=2, momentum=0.9, prox_mu=0.3),
        LocalPlan(
            batch_size=6,
            lr=0.01,
            epochs=2,
            optimizer=OptimizerKind.ADAM,
            weight_decay=1e-2,
            prox_mu=0.1,
        ),
    ],
    ids=["plain", "momentum-wd", "steps", "prox", "adam"],
)
def test_matches_torch_optim_bit_for_bit(plan: LocalPlan) -> None:
    trainer, data = make_trainer(), make_data()
    params = trainer.initial_params(4)
    c = ctx(2, 5)
    ours, result = train(trainer, params, data, plan, c)
    kind = "adam" if plan.optimizer is OptimizerKind.ADAM else "sgd"
    expected = _reference_delta(params, data, plan, c.seed("shuffle"), kind)
    assert ours.tobytes() == expected.tobytes()
    if plan.steps is not None:
        assert result.num_steps == plan.steps


def test_round_client_seeding_uses_the_w1_rule() -> None:
    factory = TorchTrainerFactory(
        "mlp", (DIM,), CLASSES, HIDDEN, None, ShuffleSeeding.ROUND_CLIENT
    )
    trainer, data, plan = factory(), make_data(), LocalPlan(batch_size=8, lr=0.05)
    params = trainer.initial_params(0)
    ours, _ = train(trainer, params, data, plan, ctx(3, 7))
    expected = _reference_delta(params, data, plan, 100003 * 3 + 7)
    assert ours.tobytes() == expected.tobytes()


def test_steps_cycle_through_reshuffled_epochs() -> None:
    trainer, data = make_trainer(), make_data(10)
    params = trainer.initial_params(0)
    _, result = train(
        trainer, params, data, LocalPlan(batch_size=4, lr=0.05, epochs=None, steps=7)
    )
    assert result.num_steps == 7
    assert result.num_examples == 10
    _, result = train(trainer, params, data, LocalPlan(batch_size=4, lr=0.05, epochs=2))
    assert result.num_steps == 6


def test_fedprox_with_huge_mu_stays_near_global() -> None:
    trainer, data = make_trainer(), make_data(64)
    params = trainer.initial_params(0)
    free, _ = train(trainer, params, data, LocalPlan(batch_size=8, lr=0.1, epochs=5))
    prox, _ = train(trainer, params, data, LocalPlan(batch_size=8, lr=0.1, epochs=5, prox_mu=9.0))
    assert np.linalg.norm(prox) < 0.1 * np.linalg.norm(free)


def test_evaluate_matches_manual_computation() -> None:
    trainer = make_trainer("mlp")
    params = trainer.initial_params(2)
    data = make_data(2500, seed=3)  # more than one evaluation batch
    w1, b1, w2, b2 = (a.astype(np.float64) for a in trainer.spec.unflatten(params))
    logits = np.maximum(data.x @ w1.T + b1, 0) @ w2.T + b2
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(len(data)), data.y].mean()
    accuracy = (logits.argmax(axis=1) == data.y).mean()
    result = trainer.evaluate(params, data)
    assert result.num_examples == 2500
    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert result.accuracy == pytest.approx(accuracy)


def test_initial_params_deterministic_per_seed() -> None:
    a, b = make_trainer(), make_trainer()
    assert a.initial_params(5).tobytes() == b.initial_params(5).tobytes()
    assert not np.array_equal(a.initial_params(5), a.initial_params(6))
    p = a.initial_params(5)
    assert p.dtype == np.float32
    assert p.shape == (a.spec.size,)
    assert not np.shares_memory(p, a.flat_np)
    with pytest.raises(ConfigError, match="seed"):
        a.initial_params(-1)


def test_factory_is_picklable_and_validated() -> None:
    factory = TorchTrainerFactory("cnn", (64,), 10, hidden=16)
    back = pickle.loads(pickle.dumps(factory))
    assert back == factory
    assert back().spec == factory().spec
    assert torch.get_num_threads() == 1
    with pytest.raises(ConfigError, match="model must be one of logreg, mlp, cnn"):
        TorchTrainerFactory("rnn", (64,), 10)
    with pytest.raises(ConfigError, match="torch_threads"):
        TorchTrainerFactory("mlp", (64,), 10, torch_threads=0)


def test_flops_per_example_counts_forward_and_the_gradients_computed() -> None:
    # first layer: forward + weight gradient (its input needs no gradient); second:
    # forward + weight gradient + input gradient; 2 FLOPs per multiply-accumulate
    trainer = make_trainer()
    assert trainer.flops_per_example == 4.0 * DIM * HIDDEN + 6.0 * HIDDEN * CLASSES


def test_non_finite_training_writes_the_delta_without_raising() -> None:
    trainer, data = make_trainer(), make_data()
    params = trainer.initial_params(0)
    params[0] = np.inf
    delta, _ = train(trainer, params, data, LocalPlan(batch_size=8, lr=0.1))
    assert not np.isfinite(delta).all()


def test_read_only_and_other_dtype_inputs_work_without_warnings() -> None:
    trainer, base = make_trainer(), make_data()
    x = base.x.astype(np.float64)
    x.flags.writeable = False
    data = ArrayDataset(x=x, y=base.y.astype(np.int32))
    params = trainer.initial_params(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, _ = train(trainer, params, data, LocalPlan())
    expected, _ = train(trainer, params, base, LocalPlan())
    assert got.tobytes() == expected.tobytes()


def test_bad_inputs_raise_clear_errors() -> None:
    trainer = make_trainer()
    params, out = trainer.initial_params(0), np.empty(trainer.spec.size, np.float32)
    data = make_data()
    with pytest.raises(ShapeError, match="train params"):
        trainer.train(params[:-1], data, LocalPlan(), ctx(), out)
    with pytest.raises(ShapeError, match="train out"):
        trainer.train(params, data, LocalPlan(), ctx(), out.astype(np.float64))
    empty = ArrayDataset(x=np.zeros((0, DIM), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="client 3 train: the dataset is empty"):
        trainer.train(params, empty, LocalPlan(), ctx(), out)
    wide = ArrayDataset(x=np.zeros((2, DIM + 1), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="the model expects"):
        trainer.train(params, wide, LocalPlan(), ctx(), out)
    bad_y = ArrayDataset(x=data.x, y=np.full(len(data), CLASSES, np.int64))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\)"):
        trainer.evaluate(params, bad_y)
