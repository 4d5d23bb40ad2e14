"""Helpers shared by the benchmarks: subprocess timing, memory sampling, output."""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass
class ProcRun:
    """A finished child process: wall time, peak memory and its last JSON line."""

    wall_s: float
    peak_rss_mb: float
    peak_pss_mb: float
    result: dict[str, Any]


def _tree_memory(proc: psutil.Process) -> tuple[float, float]:
    rss = pss = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss / 1e6, pss / 1e6


def run_child(args: Sequence[str], env: dict[str, str] | None = None) -> ProcRun:
    """Run ``python args...``; time it whole and sample its tree's memory."""
    full_env = {**os.environ, **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, env=full_env, text=True
    )
    ps = psutil.Process(proc.pid)
    peaks = [0.0, 0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                rss, pss = _tree_memory(ps)
            except psutil.NoSuchProcess:
                return
            peaks[0], peaks[1] = max(peaks[0], rss), max(peaks[1], pss)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    last = out.strip().splitlines()[-1]
    return ProcRun(wall, peaks[0], peaks[1], json.loads(last))


@contextmanager
def quiet_library() -> Iterator[None]:
    """Hold back the library's per-round warnings (stragglers, dropped updates) while a
    study whose subject they are runs; the caller's level comes back afterwards."""
    lib = logging.getLogger("fedstrata")
    level = lib.level
    lib.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lib.setLevel(level)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def emit(table_rows: Sequence[Sequence[str]], result: dict[str, Any]) -> None:
    """Print a human table, then the JSON line (always last)."""
    widths = [max(len(str(r[i])) for r in table_rows) for i in range(len(table_rows[0]))]
    for row in table_rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(json.dumps(_finite(result), allow_nan=False))


def _finite(value: Any) -> Any:
    """``value`` with NaN/Inf floats replaced by None, so the line is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
