"""Resilience benchmark (issue 15): checkpoint save/restore per tier, plus the resume and
failover parts when they are built.

Store part (this file): for a 1M- and a 10M-parameter model, a blob the size of a real
engine snapshot (model + FedAdam's two moment vectors = 3 x 4 bytes per parameter, i.e.
12 MB and 120 MB, incompressible random bytes) is saved and restored through each tier:

    memory   MemoryStore.save / .latest (SHA-256 on save and on restore, no copy)
    disk     the local-disk store in a temporary directory (write + fsync + rename;
             the file's pages are dropped from the page cache before each restore, so
             the restore is a cold read)
    s3       the object store on a real S3-compatible server, a private Ceph radosgw
             this benchmark starts (one OSD on memstore, i.e. RAM, on loopback: no WAN)

A restore is ``store.latest()``: list, read, verify the newest checkpoint. Figures are
medians over repeats; the machine (2 shared cores) is loaded, so compare tiers within
one run. The 10M figures are the top-level keys; ``per_size`` holds both sizes.

Then ``bench/_resilience_resume.py: measure(quick)`` and
``bench/_resilience_failover.py: measure(quick)`` are called when those files exist
and their keys merged; a missing part's keys are null ("not built" in the table).

Usage: python bench/resilience.py [--quick]     (last stdout line: JSON)
``--quick`` runs one repeat of each S3 save/restore (three for memory and disk); it
takes about 11 s here, the radosgw start (about 2 s) included.

Results (2-core machine shared with other jobs, load average about 5; full run;
seconds, medians):

    tier     params  blob MB   save s  restore s
    memory   1M         12     0.007     0.007
    disk     1M         12     0.022     0.028
    s3       1M         12     0.362     0.090
    memory   10M       120     0.080     0.076
    disk     10M       120     0.182     0.244
    s3       10M       120     1.573     2.053

radosgw started in 1.6 s. The S3 figures vary 2x between runs on this loaded machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedstrata.checkpoint import FileStore, MemoryStore, open_store
from fedstrata.checkpoint._radosgw import missing_binaries, radosgw

HERE = Path(__file__).resolve().parent
SIZES = {"1m": 1_000_000, "10m": 10_000_000}
BYTES_PER_PARAM = 12  # float32 model + FedAdam's first and second moments
PARTS = {
    "resume": ("ckpt_overhead_frac", "resume_bit_exact"),
    "failover": (
        "center_failover_s",
        "edge_failover_s",
        "chaos_completed",
        "chaos_acc_delta_pt",
        "acked_updates_lost",
        "availability",
    ),
}


def _blob(params: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(params * BYTES_PER_PARAM)


def _evict(store: MemoryStore | FileStore) -> None:
    """Drop a disk store's files from the page cache (a cold restore, as after a crash)."""
    if isinstance(store, FileStore) and store.tier == "disk":
        root = Path(store.url)
        for path in root.iterdir():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _time(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _tier(store: MemoryStore | FileStore, blob: bytes, repeats: int) -> dict[str, float]:
    saves, restores = [], []
    for r in range(1, repeats + 1):
        saves.append(_time(lambda r=r: store.save(r, blob))[0])
        _evict(store)
        seconds, found = _time(store.latest)
        restores.append(seconds)
        if found is None or found[1] != blob:
            raise SystemExit(f"{store!r}: the restored checkpoint differs from the saved one")
    store.close()
    return {"save_s": float(np.median(saves)), "restore_s": float(np.median(restores))}


def _stores(label: str, tmp: str, gw: Any) -> dict[str, MemoryStore | FileStore]:
    stores: dict[str, Any] = {
        "memory": MemoryStore(f"bench-{label}", keep=2),
        "disk": open_store(f"{tmp}/disk-{label}", keep=2),
    }
    if gw is not None:
        options = gw.storage_options()
        stores["s3"] = open_store(gw.url(f"bench-{label}"), keep=2, storage_options=options)
    return stores


def measure_stores(quick: bool) -> tuple[dict[str, Any], list[list[str]]]:
    """Save/restore medians per tier and size; the radosgw is started here."""
    repeats = {"memory": 3 if quick else 7, "disk": 3 if quick else 5, "s3": 1 if quick else 3}
    rows = [["tier", "params", "blob MB", "save s", "restore s", "save MB/s", "restore MB/s"]]
    per_size: dict[str, dict[str, float]] = {}
    missing = missing_binaries()
    with tempfile.TemporaryDirectory(prefix="fedstrata-bench-") as tmp, _maybe_rgw(missing) as gw:
        for label, params in SIZES.items():
            blob, figures = _blob(params, seed=params), {}
            for tier, store in _stores(label, tmp, gw).items():
                got = _tier(store, blob, repeats[tier])
                figures[f"save_{tier}_s"], figures[f"restore_{tier}_s"] = got.values()
                mb = len(blob) / 1e6
                rows.append([tier, label.upper(), f"{mb:.0f}", f"{got['save_s']:.3f}",
                             f"{got['restore_s']:.3f}", f"{mb / got['save_s']:.0f}",
                             f"{mb / got['restore_s']:.0f}"])  # fmt: skip
            per_size[label] = figures
    result: dict[str, Any] = {f"{k}": per_size["10m"].get(k) for k in _STORE_KEYS}
    result["per_size"] = per_size
    result["blob_mb"] = {k: p * BYTES_PER_PARAM / 1e6 for k, p in SIZES.items()}
    result["radosgw_start_s"] = _RGW_START[0]
    if missing:
        rows.append(["s3", "-", "-", "skipped", f"missing {', '.join(missing)}", "", ""])
    return result, rows


_STORE_KEYS = [f"{op}_{tier}_s" for tier in ("memory", "disk", "s3") for op in ("save", "restore")]
_RGW_START: list[float | None] = [None]


class _maybe_rgw:  # noqa: N801 - a context manager used like a function
    """The radosgw context, or None when Ceph is not installed (S3 keys then null)."""

    def __init__(self, missing: list[str]) -> None:
        self._ctx = None if missing else radosgw(bucket="bench")

    def __enter__(self) -> Any:
        if self._ctx is None:
            return None
        gateway = self._ctx.__enter__()
        _RGW_START[0] = gateway.start_s
        warm = open_store(gateway.url("warm-up"), storage_options=gateway.storage_options())
        warm.save(0, b"warm-up")  # the first write creates the data pool: not a save's cost
        return gateway

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


def run_part(name: str, quick: bool) -> tuple[dict[str, Any], str]:
    """``bench/_resilience_<name>.py: measure(quick)``, or null keys when not built."""
    path = HERE / f"_resilience_{name}.py"
    nulls: dict[str, Any] = dict.fromkeys(PARTS[name])
    if not path.exists():
        return nulls, "not built"
    spec = importlib.util.spec_from_file_location(f"_resilience_{name}", path)
    if spec is None or spec.loader is None:
        return nulls, f"cannot load {path.name}"
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        start = time.perf_counter()
        measured = dict(module.measure(quick))
    except Exception as exc:  # a broken part must not hide the others' figures
        traceback.print_exc(file=sys.stderr)
        return {**nulls, f"{name}_error": f"{type(exc).__name__}: {exc}"}, "failed"
    return {**nulls, **measured}, f"measured in {time.perf_counter() - start:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (< 1 minute)")
    quick = parser.parse_args().quick
    sys.path.insert(0, str(HERE))
    from _common import emit

    start = time.perf_counter()
    result, rows = measure_stores(quick)
    result["stores_wall_s"] = time.perf_counter() - start
    for name in PARTS:
        figures, status = run_part(name, quick)
        result.update(figures)
        rows.append([f"[{name}]", status, "", "", "", "", ""])
        rows += [[f"  {k}", "", "", str(v), "", "", ""] for k, v in figures.items()]
    result["quick"] = quick
    emit(rows, result)


if __name__ == "__main__":
    main()
