"""What the report and the progress display cost a short CLI run (issue 16, must-show).

For the ``w1`` and ``quickstart`` presets, ``fedstrata run`` is started as a fresh
process under a pseudo-terminal (so the progress display draws as it does for a
person) with the report on and off; measured per run: seconds until the first output
appears and until the process exits. ``report_overhead_frac`` is the median run with
the report over the median run without it, minus one. With ``--main-src PATH`` the
same runs are made, interleaved, with another checkout's sources (e.g. the main
branch) for a side-by-side comparison on the same (possibly loaded) machine.

Because a difference of two noisy wall times is noisy on a loaded machine, the
report's cost is also measured directly on one finished run of each checkout, in a
fresh process: ``report_sync_s`` (importing matplotlib and writing the report, what
main's ``fedstrata run`` does before it returns) and, for this checkout,
``report_spawn_s`` (starting the background report: what ``fedstrata run`` now waits
for); ``report_added_frac`` is that cost over the run's wall time without a report.

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


_TIMED = """
import sys, time
from pathlib import Path
t0 = time.perf_counter()
import matplotlib
from fedstrata.monitoring import write_report
write_report(Path(sys.argv[1]))
t1 = time.perf_counter()
if sys.argv[2] == "spawn":
    from fedstrata.monitoring.report_job import spawn_report
    t2 = time.perf_counter()
    job = spawn_report(Path(sys.argv[1]))
    t3 = time.perf_counter()
    job.wait()
    print(t1 - t0, t3 - t2)
else:
    print(t1 - t0, t1 - t0)
"""


def _report_cost(src: Path, run_dir: Path, spawn: bool) -> tuple[float, float]:
    """(seconds to import matplotlib and write the report, seconds the CLI spends on
    it: the same when it writes it, the process start when it spawns it)."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(src))
    mode = "spawn" if spawn else "sync"
    out = subprocess.run(
        [sys.executable, "-c", _TIMED, str(run_dir), mode],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1])


def _workload(
    presets: list[str], sources: dict[str, Path], repeats: int
) -> dict[str, dict[str, float]]:
    """Median first-output and wall seconds per (checkout, preset, report on/off), and
    the report's cost measured directly on one run of each (checkout, preset)."""
    samples: dict[tuple[str, str, bool], list[tuple[float, float]]] = {}
    kept: dict[tuple[str, str], Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:  # warm-up, not timed: disk caches, bytecode
            for src in sources.values():
                _cli_run(src, preset, False, Path(tempfile.mkdtemp(dir=tmp)))
        for _ in range(repeats):
            for preset in presets:
                for name, src in sources.items():  # interleaved: the same load for both
                    for report in (True, False):
                        out = Path(tempfile.mkdtemp(dir=tmp))
                        got = _cli_run(src, preset, report, out)
                        samples.setdefault((name, preset, report), []).append(got)
                        kept.setdefault((name, preset), next(out.iterdir()))
        costs = {
            key: _report_cost(sources[key[0]], run_dir, spawn=key[0] == "this")
            for key, run_dir in kept.items()
        }
    out: dict[str, dict[str, float]] = {}
    for (name, preset, report), values in samples.items():
        key = f"{name}/{preset}"
        row = out.setdefault(key, {})
        tag = "report" if report else "no_report"
        row[f"first_output_s_{tag}"] = statistics.median(v[0] for v in values)
        row[f"wall_s_{tag}"] = statistics.median(v[1] for v in values)
    for key, row in out.items():
        row["report_overhead_frac"] = row["wall_s_report"] / row["wall_s_no_report"] - 1.0
        name, preset = key.split("/")
        sync_s, added_s = costs[(name, preset)]
        row["report_sync_s"], row["report_added_s"] = sync_s, added_s
        row["report_added_frac"] = added_s / row["wall_s_no_report"]
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
    head = ("checkout/preset", "first out", "wall+rep", "wall-rep", "diff", "report", "added")
    print(f"{head[0]:<18} {head[1]:>9} {head[2]:>9} {head[3]:>9} {head[4]:>7} {head[5]:>7} "
          f"{head[6]:>7}")  # fmt: skip
    for key, row in runs.items():
        first, wall = row["first_output_s_report"], row["wall_s_report"]
        bare, frac = row["wall_s_no_report"], row["report_overhead_frac"]
        sync, added = row["report_sync_s"], row["report_added_frac"]
        print(f"{key:<18} {first:>8.2f}s {wall:>8.2f}s {bare:>8.2f}s {frac:>+7.1%} "
              f"{sync:>6.2f}s {added:>7.1%}")  # fmt: skip
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
        summary[f"{prefix}report_sync_s_{preset}"] = row["report_sync_s"]
        summary[f"{prefix}report_added_frac_{preset}"] = row["report_added_frac"]
    extra = store["store_ms_with_devices"] - store["store_ms_without_devices"]
    summary["device_store_ms_per_1000_clients"] = extra
    summary["device_tally_ms_per_1000_clients"] = store["tally_ms"]
    summary["repeats"] = repeats
    summary["load_avg_1m"] = os.getloadavg()[0]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
