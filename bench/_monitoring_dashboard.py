"""Dashboard first paint and update latency in headless Chromium (Issue 16 benchmark).

A synthetic run store of 10,000 devices and 1,000 rounds is written straight through
the store's schema (the ``rounds`` rows encoded by ``monitoring._schema``, the
per-device tables of ``monitoring._device_sql`` filled with ``executemany``; ``--quick``
selects a cohort of 1,000 devices per round, the full run all 10,000, ten million
device rows). The dashboard serves it as a live run (uvicorn in a thread, its default
0.5 s poll) and Chromium (Debian's, ``/usr/bin/chromium``) opens it:

* ``dashboard_first_paint_s``: navigation start to the ``fs-charts-drawn``
  performance mark, set once the twelve metric charts have drawn the run's data;
* ``dashboard_heat_map_s``: navigation start to the device heat map's first draw
  (its first read sums every device row of the store, off the charts' path);
* ``dashboard_update_latency_s``: a new round committed by the run store's writer
  (``RunStore.emit``, the path a simulation takes) to the page's chart drawing it
  (``Date.now()`` in uPlot's draw hook minus the commit time; same machine clock),
  median over several rounds.

Targets: both <= 2 s. ``measure(quick)`` returns the JSON keys; ``bench/monitoring.py``
calls it. Run alone: ``python bench/_monitoring_dashboard.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
DEVICES = 10_000
ROUNDS = 1_000


def _round(r: int, rng: np.random.Generator, cohort: int) -> Any:
    from fedstrata.core.metrics import PrivacySpent
    from fedstrata.core.metrics_system import SystemStats
    from fedstrata.monitoring import RoundMetrics

    done = int(cohort * rng.uniform(0.85, 1.0))
    round_s = float(rng.uniform(20.0, 40.0))
    m = RoundMetrics(
        round_idx=r, accuracy=min(0.95, 0.1 + 0.85 * (1 - np.exp(-r / 150))) - 0.01 * rng.random(),
        loss=2.0 * np.exp(-r / 300), train_loss=2.1 * np.exp(-r / 300),
        clients_selected=cohort, clients_completed=done, clients_failed=cohort - done,
        clients_late=0, bytes_up=cohort * 40_000, bytes_down=cohort * 400_000,
        sim_round_s=round_s, sim_time_s=30.0 * (r + 1) + round_s, wall_round_s=0.5,
        compute_s=0.6 * round_s, downlink_s=0.1 * round_s, uplink_s=0.2 * round_s,
    )  # fmt: skip
    system = SystemStats(
        devices=cohort, dense_bytes=cohort * 800_000, busy_s=cohort * 0.5 * round_s,
        transfer_s=cohort * 0.3 * round_s, contention_s=cohort * 0.03 * round_s,
        link_capacity_bytes=cohort * 600_000.0,
    )  # fmt: skip
    eps = 0.008 * (r + 1)
    return m.with_stats(system, PrivacySpent(eps, 10.0 - eps, 1.1, 0.01))


def _device_rows(r: int, cohort: int, rng: np.random.Generator) -> list[tuple[Any, ...]]:
    ids = np.sort(rng.choice(DEVICES, cohort, replace=False)) if cohort < DEVICES else None
    clients = np.arange(DEVICES) if ids is None else ids
    speed = 1.0 + (clients % 97 == 0) * 4.0  # every 97th device is slow: a straggler
    compute = rng.uniform(5.0, 15.0, len(clients)) * speed
    util = np.clip(compute / 80.0, 0.0, 1.0)
    strag = speed > 1
    return list(zip([r] * len(clients), clients.tolist(), ["accepted"] * len(clients),
                    [1.0] * len(clients), compute.tolist(), [2.0] * len(clients),
                    strag.astype(int).tolist(), util.tolist(), [""] * len(clients),
                    strict=True))  # fmt: skip


def build_store(run_dir: Path, cohort: int, rounds: int = ROUNDS) -> Any:
    """Write the synthetic store; return its writer (a RunStore, to add live rounds)."""
    from fedstrata.monitoring import RunStarted, RunStore
    from fedstrata.monitoring import _schema as schema

    store = RunStore.create(run_dir)
    store.emit(RunStarted("bench-10k", "rounds: 1001\n", num_clients=DEVICES, num_params=1))
    rng = np.random.default_rng(0)
    cols = ", ".join(schema.ROUND_COLUMNS)
    marks = ", ".join("?" * len(schema.ROUND_COLUMNS))
    totals: dict[int, list[float]] = {}
    conn = sqlite3.connect(run_dir / "metrics.sqlite")
    with conn:
        for r in range(rounds):
            conn.execute(f"INSERT INTO rounds ({cols}) VALUES ({marks})",
                         schema.round_to_row(_round(r, rng, cohort)))  # fmt: skip
            rows = _device_rows(r, cohort, rng)
            conn.executemany("INSERT INTO device_rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            for row in rows:
                t = totals.setdefault(row[1], [0, 0, 0.0, 0, 0, 0.0, 0.0])
                t[0] += 1
                t[1] += 1
                t[2] += row[7]
                t[3] += 1
                t[4] += row[6]
                t[5] += row[4]
                t[6] += row[5]
        conn.executemany(
            "INSERT INTO device_totals VALUES (?, ?, ?, ?, ?, ?, ?, ?, '')",
            [(cid, *t) for cid, t in totals.items()],
        )
    conn.close()
    return store


def _live_round(store: Any, r: int, cohort: int, rng: np.random.Generator) -> float:
    """Store round ``r`` through the writer (devices, then metrics); the commit time."""
    from fedstrata.monitoring.devices import DeviceRound, RoundDetail

    devices = tuple(
        DeviceRound(int(c), "accepted", 1.0, float(comp), 2.0, bool(s), float(u))
        for _, c, _, _, comp, _, s, u, _ in _device_rows(r, cohort, rng)
    )
    store.emit(RoundDetail(r, devices))
    store.emit(_round(r, rng, cohort))
    return time.time()


def _browser_measure(
    url: str, store: Any, cohort: int, updates: int
) -> tuple[float, float, list[float]]:
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(1)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_function("window.__fs && window.__fs.firstPaintMs !== null", timeout=60000)
        first_paint_s = page.evaluate("window.__fs.firstPaintMs") / 1000
        page.wait_for_function("window.__fs.heatReadyMs !== null", timeout=120000)
        heat_s = page.evaluate("window.__fs.heatReadyMs") / 1000
        latencies = []
        for i in range(updates):
            r = ROUNDS + i
            committed = _live_round(store, r, cohort, rng)
            page.wait_for_function(f"window.__fs.drawnAt[{r}] !== undefined", timeout=30000)
            drawn_ms = page.evaluate(f"window.__fs.drawnAt[{r}]")
            latencies.append(drawn_ms / 1000 - committed)
            page.wait_for_timeout(int(rng.uniform(100, 600)))  # commits fall anywhere in a poll
        browser.close()
    return first_paint_s, heat_s, latencies


def measure(quick: bool) -> dict[str, Any]:
    """The dashboard's keys for ``bench/monitoring.py`` (None where Chromium is missing)."""
    from fedstrata.monitoring.dashboard import BackgroundServer, open_dashboard

    cohort = 1_000 if quick else DEVICES
    out: dict[str, Any] = {"dashboard_devices": DEVICES, "dashboard_rounds": ROUNDS,
                           "dashboard_cohort": cohort}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = build_store(Path(tmp) / "run", cohort)
        out["dashboard_store_build_s"] = round(time.perf_counter() - t0, 2)
        out["dashboard_device_rows"] = cohort * ROUNDS
        if not CHROMIUM.exists():
            store.close()
            return {**out, "dashboard_first_paint_s": None, "dashboard_update_latency_s": None,
                    "dashboard_note": f"{CHROMIUM} missing"}  # fmt: skip
        try:
            app = open_dashboard(Path(tmp) / "run", live=True)
            with BackgroundServer(app) as server:
                paint, heat, lat = _browser_measure(server.url, store, cohort, 3 if quick else 8)
        finally:
            store.close()
    out["dashboard_first_paint_s"] = round(paint, 3)
    out["dashboard_heat_map_s"] = round(heat, 3)
    out["dashboard_update_latency_s"] = round(statistics.median(lat), 3)
    out["dashboard_update_latency_max_s"] = round(max(lat), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    result = measure(parser.parse_args().quick)
    for key, value in result.items():
        print(f"{key:34s} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
