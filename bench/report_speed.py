"""What the report and the progress display cost a short CLI run (issue 16, must-show).

For the ``w1`` and ``quickstart`` presets, ``fedstrata run`` is started as a fresh
process under a pseudo-terminal (so the progress display draws as it does for a
person) with the report on and off; measured per run: seconds until the first output
appears and until the process exits. ``report_overhead_frac`` is the median run with
the report over the median run without it, minus one. With ``--main-src PATH`` the
same runs are made, interleaved, with another checkout's sources (e.g. the main
branch) for a side-by-side comparison on the same (possibly loaded) machine.

Also measured in-process: the run store's cost of one 1,000-client round's per-device
rows (``RoundDetail``, inserted in the round's transaction) and of tallying them
(``SystemTally``), in milliseconds per round.

Usage: python bench/report_speed.py [--quick] [--repeats N] [--main-src /work/main/src]

The last stdout line is JSON. Targets: the report adds <= 10% to the run; the first
output within 1 s of the start.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import statistics
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
CLI = "from fedstrata.cli import main; main()"


def _cli_run(src: Path, preset: str, report: bool, out: Path) -> tuple[float, float]:
    """(seconds to the first output, seconds to the exit) of one CLI run on a pty."""
    flag = f"output.report={str(report).lower()}"
    cmd = [sys.executable, "-c", CLI, "run", "--preset", preset,
           "--set", f"output.dir={out}", "--set", flag]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(src), COLUMNS="120", TERM="xterm")
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvpe(cmd[0], cmd, env)
    first = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"{preset} run failed with {src}")
            break
        ready, _, _ = select.select([fd], [], [], 0.02)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data and first is None:
                first = time.perf_counter() - start
    end = time.perf_counter() - start
    os.close(fd)
    if report:
        _await_report(out)
    return first if first is not None else end, end


def _await_report(out: Path, limit_s: float = 300.0) -> None:
    """Wait (not timed) for a report written in the background, so that it does not
    slow the next run down."""
    deadline = time.monotonic() + limit_s
    (run_dir,) = out.iterdir()
    while not (run_dir / "report.html").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no report in {run_dir} after {limit_s} s")
        time.sleep(0.05)


def _workload(
    presets: list[str], sources: dict[str, Path], repeats: int
) -> dict[str, dict[str, float]]:
    """Median first-output and wall seconds per (checkout, preset, report on/off)."""
    samples: dict[tuple[str, str, bool], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for preset in presets:
                for name, src in sources.items():  # interleaved: the same load for both
                    for report in (True, False):
                        out = Path(tempfile.mkdtemp(dir=tmp))
                        got = _cli_run(src, preset, report, out)
                        samples.setdefault((name, preset, report), []).append(got)
    out: dict[str, dict[str, float]] = {}
    for (name, preset, report), values in samples.items():
        key = f"{name}/{preset}"
        row = out.setdefault(key, {})
        tag = "report" if report else "no_report"
        row[f"first_output_s_{tag}"] = statistics.median(v[0] for v in values)
        row[f"wall_s_{tag}"] = statistics.median(v[1] for v in values)
    for row in out.values():
        row["report_overhead_frac"] = row["wall_s_report"] / row["wall_s_no_report"] - 1.0
    return out


def _store_cost(clients: int = 1000, rounds: int = 20) -> dict[str, float]:
    """Milliseconds per round: tallying one round's devices, and storing the round
    with and without its per-device rows."""
    sys.path.insert(0, str(SRC))
    from fedstrata.coordinator.system_tally import SystemTally
    from fedstrata.monitoring import RoundMetrics, RunStarted, RunStore
    from fedstrata.monitoring.devices import RoundDetail

    def tally() -> tuple:  # type: ignore[type-arg]
        t = SystemTally(0.0, tuple(range(clients)), 100, dict.fromkeys(range(clients), 1e9))
        for c in range(clients):
            t.transfer(c, 100, 1.0, up=False, bandwidth_bps=1e6)
            t.trained(c, 1.0, 5.0 + c * 1e-3, 1e9)
            t.transfer(c, 100, 1.0, up=True, bandwidth_bps=1e6)
            t.accepted(c, 7.0 + c * 1e-3)
        return t.finish(10.0)

    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for detail in (False, True):
            store = RunStore.create(Path(tmp) / str(detail))
            store.emit(RunStarted("bench", "{}", clients, 4))
            tally_ms, store_ms = [], []
            for r in range(rounds):
                t0 = time.perf_counter()
                stats, rows = tally()
                tally_ms.append((time.perf_counter() - t0) * 1e3)
                sim_s = 10.0 * (r + 1)
                metrics = RoundMetrics(
                    r, 0.5, 1.0, 1.0, clients, clients, 0, 0, 1, 1, 10.0, sim_s, 0.1, 5.0, 1.0, 1.0
                ).with_stats(stats)
                t0 = time.perf_counter()
                if detail:
                    store.emit(RoundDetail(r, rows))
                store.emit(metrics)
                store_ms.append((time.perf_counter() - t0) * 1e3)
            store.close()
            key = "store_ms_with_devices" if detail else "store_ms_without_devices"
            result[key] = statistics.median(store_ms)
            result["tally_ms"] = statistics.median(tally_ms)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="W1 only, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--main-src", type=Path, default=None, help="another checkout's src/")
    args = parser.parse_args()
    presets = ["w1"] if args.quick else ["w1", "quickstart"]
    repeats = 1 if args.quick else args.repeats
    sources = {"this": SRC}
    if args.main_src is not None:
        sources["main"] = args.main_src
    runs = _workload(presets, sources, repeats)
    store = _store_cost()
    print(
        f"{'checkout/preset':<20} {'first out':>10} {'wall+rep':>9} {'wall-rep':>9} {'report':>8}"
    )
    for key, row in runs.items():
        first, wall = row["first_output_s_report"], row["wall_s_report"]
        bare, frac = row["wall_s_no_report"], row["report_overhead_frac"]
        print(f"{key:<20} {first:>9.2f}s {wall:>8.2f}s {bare:>8.2f}s {frac:>+7.1%}")
    print(f"1,000-client round: tally {store['tally_ms']:.1f} ms, store "
          f"{store['store_ms_without_devices']:.2f} ms -> {store['store_ms_with_devices']:.2f} ms "
          "with per-device rows")  # fmt: skip
    summary: dict[str, float | int] = {}
    for key, row in runs.items():
        checkout, preset = key.split("/")
        prefix = "" if checkout == "this" else f"{checkout}_"
        summary[f"{prefix}report_overhead_frac_{preset}"] = row["report_overhead_frac"]
        summary[f"{prefix}first_output_s_{preset}"] = row["first_output_s_report"]
        summary[f"{prefix}wall_s_{preset}"] = row["wall_s_report"]
    extra = store["store_ms_with_devices"] - store["store_ms_without_devices"]
    summary["device_store_ms_per_1000_clients"] = extra
    summary["device_tally_ms_per_1000_clients"] = store["tally_ms"]
    summary["repeats"] = repeats
    summary["load_avg_1m"] = os.getloadavg()[0]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
