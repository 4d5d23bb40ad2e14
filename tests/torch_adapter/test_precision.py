"""Mixed-precision local training (Issue 17 part 1): the policy, dynamic loss scaling,
and every training path of the trainer under fp32, bf16 and fp16."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from fedstrata.builders import trainer_factory
from fedstrata.config import load_config
from fedstrata.core import ArrayDataset, LocalPlan, OptimizerKind, RoundContext
from fedstrata.data import make_federated
from fedstrata.errors import ConfigError
from fedstrata.torch_adapter import LocalTraining, Task, TaskTrainerFactory, TorchTrainerFactory
from fedstrata.torch_adapter import precision as precision_mod
from fedstrata.torch_adapter.precision import (
    LossScaler,
    MixedPrecision,
    Precision,
    PrecisionPolicy,
    ScaledOptimizer,
)
from fedstrata.torch_adapter.trainer import TorchTrainer

DIM, CLASSES = 12, 3
PLAN = LocalPlan(batch_size=8, lr=0.05, epochs=2)


def make_data(n: int = 48, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    w = np.random.default_rng(99).standard_normal((DIM, CLASSES))
    return ArrayDataset(x=x, y=np.argmax(x @ w, axis=1).astype(np.int64))


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def train(trainer: TorchTrainer, plan: LocalPlan = PLAN) -> tuple[np.ndarray, Mapping[str, float]]:
    params = trainer.initial_params(0)
    out = np.full_like(params, np.nan)
    result = trainer.train(params, make_data(), plan, RoundContext(0, 7).for_client(1), out)
    return out, result.metrics


def builtin(precision: str, kind: str = "mlp") -> TorchTrainer:
    return TorchTrainerFactory(kind, (DIM,), CLASSES, hidden=16, precision=precision)()


# ---- the policy -------------------------------------------------------------------------
@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_exactly_where_the_hardware_has_native_bf16(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(precision_mod, "native_bf16", lambda device_type: native)
    want = Precision.BF16 if native else Precision.FP32
    assert PrecisionPolicy.of("auto").mode is want
    assert TorchTrainerFactory("mlp", (DIM,), CLASSES, precision="auto")().precision.mode is want


def test_bad_precisions_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16, auto"):
        PrecisionPolicy.of("half")
    with pytest.raises(ConfigError, match="must be resolved"):
        PrecisionPolicy(Precision.AUTO)
    with pytest.raises(ConfigError, match=r"TorchTrainerFactory\.precision"):
        TorchTrainerFactory("mlp", (DIM,), CLASSES, precision="fp8")
    with pytest.raises(ConfigError, match="precision"):
        load_config(None, "quickstart", ["client.precision=fp64"])


def test_the_config_reaches_the_trainer_and_the_runtime() -> None:
    cfg = load_config(
        None,
        "quickstart",
        ["client.precision=bf16", "data.num_clients=4", "rounds.clients_per_round=4"],
    )
    dataset = make_federated("digits", partition="iid", num_clients=4, seed=0)
    assert trainer_factory(cfg, dataset)().precision.mode is Precision.BF16  # type: ignore[attr-defined]
    from fedstrata.runtime.loader import deployment

    deploy = deployment(cfg)
    assert deploy.factory().precision.mode is Precision.BF16  # type: ignore[attr-defined]


# ---- dynamic loss scaling ---------------------------------------------------------------
@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5))
def test_loss_scaler_grows_after_finite_runs_and_backs_off_on_overflow(
    outcomes: list[bool], interval: int
) -> None:
    scaler = LossScaler(scale=1024.0, growth_interval=interval, min_scale=2.0**-20)
    scale, run = 1024.0, 0
    for finite in outcomes:
        scaler.update(finite)
        if finite:
            run += 1
            if run == interval:
                scale, run = scale * 2, 0
        else:
            scale, run = max(scale / 2, 2.0**-20), 0
        assert scaler.scale == scale
    assert scaler.skipped == outcomes.count(False)


def test_unscale_divides_in_place_and_detects_inf_and_nan() -> None:
    scaler = LossScaler(scale=8.0)
    g = [torch.full((3,), 16.0), torch.full((2,), 8.0)]
    assert scaler.unscale_(g)
    assert torch.equal(g[0], torch.full((3,), 2.0))
    assert torch.equal(g[1], torch.ones(2))
    assert not scaler.unscale_([torch.tensor([1.0, float("inf")])])
    assert not scaler.unscale_([torch.tensor([float("nan")])])
    with pytest.raises(ConfigError, match="backoff_factor"):
        LossScaler(backoff_factor=1.5)


def test_scaled_backward_accumulates_exactly_and_leaves_float32_gradients() -> None:
    torch.manual_seed(0)
    model = net()
    x, y = torch.randn(8, DIM), torch.randint(0, CLASSES, (8,))
    params = list(model.parameters())

    def grads() -> list[torch.Tensor]:
        return [p.grad for p in params if p.grad is not None]

    for mixed in (MixedPrecision(None), MixedPrecision(LossScaler())):
        model.zero_grad()
        for half in (x[:4], x[4:]):  # two backward calls accumulate
            loss = nn.functional.cross_entropy(model(half), y[: len(half)])
            assert mixed.backward(loss, grads)
        got = [g.clone() for g in grads()]
        if mixed.scaler is None:
            reference = got
        else:
            for a, b in zip(got, reference, strict=True):
                assert a.dtype == torch.float32
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert mixed.step_allowed()


# ---- the trainer's paths ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_flat_path_updates_are_float32_and_close_to_fp32(kind: str, precision: str) -> None:
    shape = (16,) if kind == "cnn" else (DIM,)
    data = make_data()
    if kind == "cnn":
        data = ArrayDataset(np.tile(data.x, (1, 2))[:, :16].copy(), data.y)

    def run(p: str) -> tuple[np.ndarray, Mapping[str, float]]:
        t = TorchTrainerFactory(kind, shape, CLASSES, hidden=16, precision=p)()
        params = t.initial_params(0)
        out = np.empty_like(params)
        res = t.train(params, data, PLAN, RoundContext(0, 7).for_client(1), out)
        return out, res.metrics

    ref, _ = run("fp32")
    out, metrics = run(precision)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert not np.array_equal(out, ref)  # the forward really ran in 16 bits
    tolerance = {"bf16": 0.15, "fp16": 0.03}[precision]  # 8 vs 11 significant bits
    assert np.linalg.norm(out - ref) < tolerance * np.linalg.norm(ref)
    if precision == "fp16":
        assert metrics["skipped_steps"] == 0
        assert metrics["loss_scale"] == 2.0**16
    else:
        assert "skipped_steps" not in metrics


def test_autocast_covers_the_forward_and_the_loss_sees_float32() -> None:
    seen: dict[str, torch.dtype] = {}

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen["logits"] = out.dtype
        return nn.functional.cross_entropy(out, target)

    for precision, inner in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        trainer = TaskTrainerFactory(Task(model=net, loss=loss), precision=precision)()
        hook = trainer.model[0].register_forward_hook(
            lambda m, i, o: seen.__setitem__("hidden", o.dtype)
        )
        train(trainer)
        hook.remove()
        assert seen == {"hidden": inner, "logits": torch.float32}
        assert "forward" not in trainer.model.__dict__  # restored after training
        seen.clear()


def test_evaluation_runs_in_float32() -> None:
    params = builtin("fp32").initial_params(3)
    data = make_data()
    assert builtin("fp32").evaluate(params, data) == builtin("bf16").evaluate(params, data)


def huge_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, target) * 1e35


def test_fp16_skips_every_overflowing_step_and_lowers_the_scale() -> None:
    trainer = TaskTrainerFactory(Task(model=net, loss=huge_loss), precision="fp16")()
    out, metrics = train(trainer)
    steps = 2 * 48 // 8
    assert metrics["skipped_steps"] == steps
    assert metrics["loss_scale"] == 2.0**16 * 0.5**steps
    assert not out.any()  # no step applied: the update is exactly zero


def test_fp16_recovers_once_the_scale_has_come_down() -> None:
    def big(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, target) * 3e4  # x 65536: fp16 overflows

    trainer = TaskTrainerFactory(Task(model=net, loss=big), precision="fp16")()
    out, metrics = train(trainer, LocalPlan(batch_size=8, lr=1e-7, epochs=3))
    assert 1 <= metrics["skipped_steps"] < 18
    assert np.isfinite(out).all()
    assert out.any()


def adam(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-2)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_the_torch_optim_loop_trains_in_each_precision(precision: str) -> None:
    ref, _ = train(TaskTrainerFactory(Task(model=net, optimizer=adam))())
    out, metrics = train(
        TaskTrainerFactory(Task(model=net, optimizer=adam), precision=precision)()
    )
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert np.linalg.norm(out - ref) < 0.1 * np.linalg.norm(ref)
    assert ("skipped_steps" in metrics) == (precision == "fp16")


def own_loop(model: nn.Module, data: object, ctx: LocalTraining) -> dict[str, float]:
    skipped = 0
    for x, y in ctx.batches():
        ctx.optimizer.zero_grad()
        ok = ctx.backward(ctx.loss(model(x), y) * (1e35 if ctx.steps == 1 else 1.0))
        skipped += not ok
        ctx.optimizer.step()
    return {"own_skipped": float(skipped)}


def test_a_tasks_own_loop_gets_loss_scaling_through_ctx_backward() -> None:
    task = Task(model=net, optimizer=adam, train=own_loop)
    trainer = TaskTrainerFactory(task, precision="fp16")()
    out, metrics = train(trainer)
    assert metrics["own_skipped"] == 1 == metrics["skipped_steps"]  # the poisoned step
    assert np.isfinite(out).all()
    assert out.any()
    fp32, fp32_metrics = train(TaskTrainerFactory(task)())
    assert np.isfinite(fp32).all()
    assert "skipped_steps" not in fp32_metrics


def test_scaled_optimizer_passes_everything_else_through() -> None:
    model = net()
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    mixed = MixedPrecision(LossScaler())
    opt = ScaledOptimizer(inner, mixed)
    assert opt.param_groups is inner.param_groups
    assert opt.state is inner.state
    loss = nn.functional.cross_entropy(
        model(torch.randn(4, DIM)), torch.zeros(4, dtype=torch.long)
    )
    mixed.backward(
        loss * float("inf"), lambda: [p.grad for p in model.parameters() if p.grad is not None]
    )
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert mixed.scaler is not None
    assert mixed.scaler.skipped == 1


def test_fedprox_and_momentum_under_fp16_match_fp32_closely() -> None:
    plan = LocalPlan(batch_size=8, lr=0.05, epochs=2, momentum=0.9, prox_mu=0.1)
    ref, _ = train(builtin("fp32"), plan)
    out, metrics = train(builtin("fp16"), plan)
    assert metrics["skipped_steps"] == 0
    assert np.linalg.norm(out - ref) < 0.01 * np.linalg.norm(ref)


def test_adam_on_the_flat_path_under_bf16() -> None:
    plan = LocalPlan(batch_size=8, lr=0.01, epochs=1, optimizer=OptimizerKind.ADAM)
    out, _ = train(builtin("bf16"), plan)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.any()
