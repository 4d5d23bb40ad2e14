"""Issue 17 part 3: fp32 vs bf16 vs fp16 local training, throughput, memory, accuracy.

Two parts, one run:

* **Throughput and memory** of local training steps (forward, backward, SGD with
  momentum) of the two example models, ``ShapesCNN`` (examples/image_cnn) and
  ``TransformerClassifier`` (examples/text_transformer), on random batches, under
  fedstrata's precision policy (:mod:`fedstrata.torch_adapter.precision`: autocast of
  the forward, float32 weights and optimizer state, fp16 loss scaling). The device
  is chosen automatically: CUDA when available, else the CPU. Sizes: on a GPU, a
  CNN on 3x64x64 images (batch 256) and a transformer of width 256, 4 layers, 128
  tokens (batch 128); on the CPU, 3x32x32 (batch 64) and width 64, 2 layers, 32
  tokens (batch 32). Arms are interleaved (fp32, bf16, fp16, repeated), medians
  reported. ``*_speedup`` and ``*_peak_mem_ratio`` are for the better of bf16/fp16
  (higher throughput) against fp32. Peak memory: ``torch.cuda.max_memory_allocated``
  on a GPU; on the CPU it is null (torch keeps no CPU allocator statistics, and the
  process's RSS is dominated by the runtime and cannot be reset between arms);
  ``*_activation_ratio`` is measured on every device: the bytes autograd saves for
  the backward pass of one batch, 16-bit arm over fp32.
* **Accuracy**: the quickstart federation (``--quick``: its first 30 rounds; else all
  100) and the image example (its config, 20 rounds) through ``fedstrata run`` with
  ``client.precision`` fp32, bf16 and fp16 (fedstrata trains clients on the CPU).
  ``skipped_steps``: fp16 steps skipped for non-finite gradients in the throughput
  part's fp16 arms (dynamic loss scaling).

Usage: python bench/precision.py [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.torch_adapter.footprint import saved_activation_bytes
from fedstrata.torch_adapter.precision import Precision, PrecisionPolicy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MODES = ("fp32", "bf16", "fp16")
QUIET = ["output.run_store=false", "output.report=false", "output.progress=false"]


def _example(name: str) -> ModuleType:
    path = EXAMPLES / name / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Workload:
    """A model factory and a batch maker on one device."""

    name: str
    model: Callable[[], nn.Module]
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    batch_size: int


def workloads(device: torch.device) -> list[Workload]:
    gpu = device.type == "cuda"
    cnn_mod, text_mod = _example("image_cnn"), _example("text_transformer")
    side, cnn_batch = (64, 256) if gpu else (32, 64)
    cfg = (
        text_mod.TextConfig(vocab_size=1000, max_len=128, d_model=256, heads=8, layers=4,
                            ff_dim=1024, dropout=0.0)
        if gpu else
        text_mod.TextConfig(vocab_size=200, max_len=32, d_model=64, heads=4, layers=2,
                            ff_dim=128, dropout=0.0)
    )  # fmt: skip
    text_batch = 128 if gpu else 32
    gen = torch.Generator(device="cpu").manual_seed(0)

    def images() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand((cnn_batch, 3, side, side), generator=gen)
        return x.to(device), torch.randint(0, 5, (cnn_batch,), generator=gen).to(device)

    def tokens() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(1, cfg.vocab_size, (text_batch, cfg.max_len), generator=gen)
        return x.to(device), torch.randint(0, cfg.classes, (text_batch,), generator=gen).to(device)

    return [
        Workload("cnn", lambda: cnn_mod.ShapesCNN().to(device), images, cnn_batch),
        Workload("transformer", lambda: text_mod.TransformerClassifier(cfg).to(device), tokens,
                 text_batch),
    ]  # fmt: skip


@dataclass
class Arm:
    """One precision's measurements on one workload, across repeats."""

    samples_s: list[float]
    peak_bytes: list[int]
    skipped: int = 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_arm(
    work: Workload, mode: str, device: torch.device, steps: int
) -> tuple[float, int, int]:
    """(samples/s, peak bytes or -1, skipped steps) of ``steps`` training steps."""
    torch.manual_seed(0)
    model = work.model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    policy = PrecisionPolicy.of(mode, device.type)
    mixed = policy.start()
    batches = [work.batch() for _ in range(4)]
    params = list(model.parameters())

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        mixed.backward(loss, lambda: [p.grad for p in params if p.grad is not None])
        if mixed.step_allowed():
            opt.step()

    with policy.autocast_forward(model):
        for i in range(3):  # warm-up: kernels, allocator
            step(i)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        _sync(device)
        elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else -1
    skipped = int(mixed.metrics().get("skipped_steps", 0.0))
    return work.batch_size * steps / elapsed, peak, skipped


def activation_ratio(work: Workload, mode: str, device: torch.device) -> float:
    """Bytes saved for backward of one batch under ``mode``, over fp32."""
    torch.manual_seed(0)
    model = work.model()
    x, _ = work.batch()
    fp32 = saved_activation_bytes(model, x)
    with PrecisionPolicy.of(mode, device.type).autocast_forward(model):
        low = saved_activation_bytes(model, x)
    return low / fp32


def bench_speed(device: torch.device, steps: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"skipped_steps": 0}
    for work in workloads(device):
        arms = {m: Arm([], []) for m in MODES}
        for _ in range(repeats):
            for mode in MODES:  # interleaved
                rate, peak, skipped = time_arm(work, mode, device, steps)
                arms[mode].samples_s.append(rate)
                arms[mode].peak_bytes.append(peak)
                arms[mode].skipped += skipped
        out.update(_summarise(work, arms, device))
        out["skipped_steps"] += arms["fp16"].skipped
    return out


def _summarise(work: Workload, arms: dict[str, Arm], device: torch.device) -> dict[str, Any]:
    rate = {m: statistics.median(a.samples_s) for m, a in arms.items()}
    best = max(("bf16", "fp16"), key=lambda m: rate[m])
    peak = {m: max(a.peak_bytes) for m, a in arms.items()}
    n = work.name
    out: dict[str, Any] = {f"{n}_{m}_samples_s": rate[m] for m in MODES}
    out[f"{n}_best16"] = best
    out[f"{n}_speedup"] = rate[best] / rate["fp32"]
    on_gpu = device.type == "cuda"
    out[f"{n}_peak_mem_ratio"] = peak[best] / peak["fp32"] if on_gpu else None
    out[f"{n}_peak_mem_bytes"] = {m: peak[m] for m in MODES} if on_gpu else None
    out[f"{n}_activation_ratio"] = activation_ratio(work, best, device)
    return out


def accuracy(path: Path | None, preset: str | None, overrides: list[str]) -> dict[str, float]:
    out = {}
    for mode in MODES:
        cfg = load_config(path, preset, [*overrides, f"client.precision={mode}", *QUIET])
        acc = run(cfg).simulation.rounds[-1].accuracy
        out[mode] = float("nan") if acc is None else acc
    return out


def bench_accuracy(quick: bool) -> dict[str, Any]:
    rounds = 30 if quick else 100
    quickstart = accuracy(None, "quickstart", [f"rounds.rounds={rounds}", "sim.workers=0"])
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "image_cnn"
        shutil.copytree(EXAMPLES / "image_cnn", project, ignore=shutil.ignore_patterns("data"))
        image = accuracy(project / "fedstrata.yaml", None, [f"output.dir={tmp}/runs"])
    out: dict[str, Any] = {f"acc_{m}": quickstart[m] for m in MODES}
    out.update({f"image_acc_{m}": image[m] for m in MODES})
    out["acc_rounds"] = rounds
    out["image_acc_rounds"] = 20
    return out


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "null" if value is None else format(value, spec)


def table(r: dict[str, Any]) -> list[list[str]]:
    rows = [["workload", "fp32 samples/s", "bf16 samples/s", "fp16 samples/s", "best16",
             "speedup", "peak mem ratio", "activation ratio"]]  # fmt: skip
    for n in ("cnn", "transformer"):
        rates = [_fmt(r[f"{n}_{m}_samples_s"], ",.0f") for m in MODES]
        ratios = [_fmt(r[f"{n}_{k}"]) for k in ("speedup", "peak_mem_ratio", "activation_ratio")]
        rows.append([n, *rates, r[f"{n}_best16"], *ratios])
    for what, key in (("quickstart", "acc"), ("image example", "image_acc")):
        accs = [_fmt(r[f"{key}_{m}"], ".4f") for m in MODES]
        rows.append([f"{what} accuracy", *accs, "", "", "", ""])
    return rows


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import emit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    t0 = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps, repeats = (10, 3) if args.quick else (30, 5)
    result: dict[str, Any] = {
        "bench": "precision",
        "quick": args.quick,
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "auto_resolves_to": PrecisionPolicy.of(Precision.AUTO, device.type).mode.value,
        "peak_mem_note": None
        if device.type == "cuda"
        else "null on CPU: torch keeps no CPU allocator statistics and the process RSS "
        "(dominated by the runtime) cannot be reset between arms; see *_activation_ratio",
        **bench_speed(device, steps, repeats),
        **bench_accuracy(args.quick),
    }
    result["wall_s"] = time.perf_counter() - t0
    emit(table(result), result)


if __name__ == "__main__":
    main()
