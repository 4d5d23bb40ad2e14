"""Monitoring's cost per round, a real Prometheus scrape, and the dashboard (Issue 16).

Two workloads run with and without monitoring, interleaved in ABBA order (off, on,
on, off, ...) after one warm-up run, in this process:

* ``w1``: the W1 preset (100 digits clients, MLP 128, 1 epoch), run store on, no report;
* ``1k``: one population of 1,000 synthetic clients (FedProx generator, at most 64
  examples each), all 1,000 in every round, logistic regression, 1 epoch of batch 10.

"On" adds what a monitored deployment runs: the Prometheus exporter serving
``/metrics``, a client scraping it every second, and the default alert rules
(:data:`fedstrata.monitoring.alerts.DEFAULT_RULES`) checked every round. Per run, the
round time is the median ``wall_round_s`` of its rounds after the first; per workload,
``overhead`` is the median over the (off, on) pairs of on/off - 1, and ``in_sink`` the
CPU time spent inside the monitoring sinks per round divided by the round time, plus
the CPU time to render ``/metrics`` once per scrape interval (what monitoring itself
costs). ``monitoring_overhead_frac`` is the larger workload's in-sink share (target <=
2%); the end-to-end ratios are reported beside it, but on a loaded 2-core machine their
noise is far larger than the effect: W1 rounds of the same configuration ranged
0.21-0.40 s between back-to-back runs at a load average of 14.

``prometheus_scrape_ok``: a private Prometheus server (the Debian binary) scrapes the last
"on" run's exporter and returns its round count (null without the binary).
``dashboard_*``: from ``bench/_monitoring_dashboard.py: measure(quick)`` when present.

Usage: python bench/monitoring.py [--quick]; the last line is JSON.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from fedstrata.api import run
from fedstrata.config import FedConfig, load_config
from fedstrata.monitoring import MetricEvent, Sink
from fedstrata.monitoring.alerts import DEFAULT_RULES
from fedstrata.monitoring.catalogue import METRICS
from fedstrata.monitoring.live import AlertMonitor
from fedstrata.monitoring.prometheus import PrometheusExporter
from fedstrata.monitoring.promserver import PrometheusServer, find_prometheus

OUT = Path(tempfile.gettempdir()) / "fedstrata-bench-monitoring"
SCRAPE_EVERY_S = 1.0


class Timed:
    """Forwards to ``inner`` and adds the CPU time spent in it to ``clock[0]`` (thread
    CPU time: on a loaded machine a preempted call's wall time is mostly waiting)."""

    def __init__(self, inner: Sink, clock: list[float]) -> None:
        self.inner, self.clock = inner, clock

    def emit(self, event: MetricEvent) -> None:
        start = time.thread_time()
        self.inner.emit(event)
        self.clock[0] += time.thread_time() - start

    def close(self) -> None:
        self.inner.close()


_SCRAPE_LOOP = """
import sys, time, urllib.request
ok = 0
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
            r.read()
        ok += 1
        print(ok, flush=True)
    except OSError:
        pass
    time.sleep(float(sys.argv[2]))
"""


class Scraper:
    """A separate process GETting ``url`` every ``every_s`` seconds (as Prometheus would:
    its own CPU is not the federation's); :attr:`ok` counts its successful scrapes."""

    def __init__(self, url: str, every_s: float = 1.0) -> None:
        self.args = [sys.executable, "-c", _SCRAPE_LOOP, url, str(every_s)]
        self.ok = 0
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Scraper:
        self._proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            out, _ = self._proc.communicate(timeout=10)
            lines = out.split()
            self.ok = int(lines[-1]) if lines else 0


def w1_config(quick: bool) -> FedConfig:
    rounds = 6 if quick else 10
    return load_config(preset="w1", overrides=[
        f"rounds.rounds={rounds}", "output.report=false", "output.progress=false",
        f"output.dir={OUT}", "monitoring.alerts=[]",
    ])  # fmt: skip


def k1_config(quick: bool) -> FedConfig:
    rounds = 2 if quick else 4
    return load_config(preset="quickstart", overrides=[
        "name=k1", "data.name=synthetic", "data.num_clients=1000",
        "data.synthetic_max_samples=64", "data.partition=iid", "model.kind=logreg",
        "client.epochs=1", "client.batch_size=10", "client.lr=0.05",
        "rounds.clients_per_round=1000", f"rounds.rounds={rounds}", "rounds.eval_every=1",
        "output.report=false", "output.progress=false", f"output.dir={OUT}",
        "monitoring.alerts=[]",
    ])  # fmt: skip


def one_run(cfg: FedConfig, monitored: bool) -> dict[str, Any]:
    """One run; with ``monitored``: exporter + 1 s scraper + the default alert rules."""
    if not monitored:
        cpu = _cpu_s()
        rounds = run(cfg).simulation.rounds
        cpu = _cpu_s() - cpu
        return {"round_s": _round_s(rounds), "cpu_s": cpu / len(rounds), "in_sink_s": 0.0}
    clock = [0.0]
    exporter = PrometheusExporter(cfg.name, total_rounds=cfg.rounds.rounds)
    exporter.serve(0)
    alerts = AlertMonitor(DEFAULT_RULES, [exporter], cfg.rounds.rounds)
    with Scraper(exporter.url, SCRAPE_EVERY_S) as scraper:
        cpu = _cpu_s()
        rounds = run(cfg, sinks=[Timed(exporter, clock), Timed(alerts, clock)]).simulation.rounds
        cpu = _cpu_s() - cpu
    return {
        "round_s": _round_s(rounds),
        "cpu_s": cpu / len(rounds),
        "in_sink_s": clock[0] / len(rounds),
        "exporter": exporter,
        "scrapes": scraper.ok,
        "rounds": len(rounds),
    }


def scrape_s(exporter: PrometheusExporter, repeats: int = 50) -> float:
    """Median CPU seconds to render the exporter's ``/metrics`` (the work of one scrape)."""
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        generate_latest(exporter.registry)
        times.append(time.thread_time() - start)
    return float(statistics.median(times))


def _cpu_s() -> float:
    """CPU seconds of this process (the run's main process: the round loop, the sinks,
    the exporter's HTTP thread), user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _round_s(rounds: list[Any]) -> float:
    steady = [m.wall_round_s for m in rounds[1:]] or [m.wall_round_s for m in rounds]
    return float(statistics.median(steady))


def workload(name: str, cfg: FedConfig, pairs: int, warm_up: bool) -> dict[str, Any]:
    """(A warm-up run, then) ``pairs`` interleaved (off, on) runs."""
    if warm_up:
        one_run(cfg, monitored=False)  # imports, caches, first fork
    ratios, cpu, offs, ons, in_sink, last_on = [], [], [], [], [], None
    for i in range(pairs):  # ABBA order: a drift of the machine's load cancels
        if last_on is not None:
            last_on["exporter"].close()
        if i % 2 == 0:
            off = one_run(cfg, monitored=False)
            on = one_run(cfg, monitored=True)
        else:
            on = one_run(cfg, monitored=True)
            off = one_run(cfg, monitored=False)
        last_on = on
        offs.append(off["round_s"])
        ons.append(on["round_s"])
        ratios.append(on["round_s"] / off["round_s"] - 1.0)
        cpu.append(on["cpu_s"] / off["cpu_s"] - 1.0)
        scrape_share = scrape_s(on["exporter"]) / SCRAPE_EVERY_S  # serving /metrics
        in_sink.append(on["in_sink_s"] / off["round_s"] + scrape_share)
    return {
        "name": name,
        "off_s": statistics.median(offs),
        "on_s": statistics.median(ons),
        "overhead": statistics.median(ratios),
        "cpu": statistics.median(cpu),
        "scrapes": last_on["scrapes"] if last_on else 0,
        "in_sink": statistics.median(in_sink),
        "last_on": last_on,
    }


def scrape_with_prometheus(last_on: dict[str, Any]) -> bool | None:
    """Whether a real Prometheus scrapes the exporter's final round count."""
    if find_prometheus() is None:
        return None
    exporter: PrometheusExporter = last_on["exporter"]
    with tempfile.TemporaryDirectory() as tmp:
        server = PrometheusServer(Path(tmp), [f"127.0.0.1:{exporter.port}"])
        with server:
            want = float(last_on["rounds"])
            got = server.wait_for("fedstrata_rounds_total", bool, timeout_s=30)
            return got[0][1] == want


def dashboard(quick: bool) -> dict[str, Any]:
    """``bench/_monitoring_dashboard.py: measure(quick)`` if it exists."""
    try:
        module = importlib.import_module("_monitoring_dashboard")
    except ModuleNotFoundError:
        return {"dashboard_first_paint_s": None, "dashboard_update_latency_s": None}
    measure: Callable[[bool], dict[str, Any]] = module.measure
    return measure(quick)


def main() -> None:
    from _common import emit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    pairs = 2 if args.quick else 4
    results = [workload("w1", w1_config(args.quick), pairs, warm_up=True),
               workload("1k", k1_config(args.quick), pairs - 1 if args.quick else pairs,
                        warm_up=False)]  # fmt: skip
    scrape_ok = scrape_with_prometheus(results[-1]["last_on"])
    for r in results:
        r["last_on"]["exporter"].close()
    board = dashboard(args.quick)
    rows = [["workload", "round s off", "round s on", "wall", "CPU", "in sinks", "scrapes"]]
    for r in results:
        rows.append([r["name"], f"{r['off_s']:.3f}", f"{r['on_s']:.3f}",
                     f"{100 * r['overhead']:+.2f}%", f"{100 * r['cpu']:+.2f}%",
                     f"{100 * r['in_sink']:.3f}%", str(r["scrapes"])])  # fmt: skip
    rows.append(["prometheus scrape", str(scrape_ok), "", "", "", "", ""])
    for key, value in board.items():
        rows.append([key, "not built" if value is None else str(value), "", "", "", "", ""])
    by_name = {r["name"]: r for r in results}
    emit(rows, {
        "bench": "monitoring",
        "quick": args.quick,
        "metrics_defined": len(METRICS),
        "monitoring_overhead_frac": round(max(r["in_sink"] for r in results), 5),
        "monitoring_overhead_e2e_frac": {k: round(v["overhead"], 4) for k, v in by_name.items()},
        "monitoring_overhead_cpu_frac": {k: round(v["cpu"], 4) for k, v in by_name.items()},
        "round_s_off": {k: round(v["off_s"], 4) for k, v in by_name.items()},
        "round_s_on": {k: round(v["on_s"], 4) for k, v in by_name.items()},
        "pairs": pairs,
        "prometheus_scrape_ok": scrape_ok,
        **board,
    })  # fmt: skip


if __name__ == "__main__":
    main()
