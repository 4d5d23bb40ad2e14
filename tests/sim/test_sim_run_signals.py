"""A real ``fedstrata run`` with forked workers, killed or interrupted mid-run.

Each test starts the command line in a subprocess (workers forked from it), waits
until its run store records a round, signals it, then polls with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

import fedstrata

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork and /proc: Linux only")

SRC = str(Path(fedstrata.__file__).resolve().parents[1])
RUN = [
    "run",
    "--quiet",
    "--set",
    "sim.workers=2",
    "--set",
    "rounds.rounds=1000",
    "--set",
    "data.num_clients=24",
    "--set",
    "rounds.clients_per_round=12",
    "--set",
    "client.epochs=1",
    "--set",
    "output.report=false",
]
DEADLINE_S = 60.0


def _start(tmp_path: Path) -> subprocess.Popen[bytes]:
    """Start the run; output goes to files (orphans could hold pipes open for good)."""
    env = {**os.environ, "PYTHONPATH": SRC}
    argv = [sys.executable, "-c", "from fedstrata.cli import main; main()", *RUN]
    argv += ["--set", f"output.dir={tmp_path / 'runs'}"]
    with (tmp_path / "stdout").open("wb") as out, (tmp_path / "stderr").open("wb") as err:
        # A shell's background job starts with SIGINT ignored; a terminal's does not.
        reset = signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            return subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        finally:
            signal.signal(signal.SIGINT, reset)


def _rounds_recorded(tmp_path: Path) -> int:
    for run_dir in (tmp_path / "runs").glob("*"):
        db = run_dir / "metrics.sqlite"
        if db.is_file():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                    return int(conn.execute("select count(*) from rounds").fetchone()[0])
            except sqlite3.Error:
                return 0
    return 0


def _wait_for_a_round(proc: subprocess.Popen[bytes], tmp_path: Path) -> list[psutil.Process]:
    """Wait until a round is recorded and both workers run; returns the workers."""
    stop = time.monotonic() + DEADLINE_S
    while time.monotonic() < stop:
        assert proc.poll() is None, (tmp_path / "stderr").read_text()
        workers = psutil.Process(proc.pid).children(recursive=True)
        if _rounds_recorded(tmp_path) >= 1 and len(workers) >= 2:
            return workers
        time.sleep(0.1)
    raise AssertionError("the run recorded no round in time")


def _shm_files(procs: list[psutil.Process]) -> set[str]:
    """The /dev/shm files these processes map."""
    found: set[str] = set()
    for p in procs:
        try:
            maps = Path(f"/proc/{p.pid}/maps").read_text()
        except OSError:
            continue
        found |= {line.split()[-1] for line in maps.splitlines() if "/dev/shm/" in line}
    return found


def _poll(condition: object, deadline_s: float = 10.0) -> bool:
    assert callable(condition)
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


@pytest.fixture
def cleanup() -> Iterator[list[psutil.Process]]:
    """Processes to SIGKILL after the test if they outlived it."""
    procs: list[psutil.Process] = []
    yield procs
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def test_sigkill_of_run_leaves_no_workers_and_no_shared_memory(tmp_path, cleanup):
    """Issue 11 defect 10: a SIGKILLed run's workers exit and /dev/shm is not leaked."""
    proc = _start(tmp_path)
    try:
        workers = _wait_for_a_round(proc, tmp_path)
        cleanup.extend(workers)
        mapped = _shm_files([psutil.Process(proc.pid), *workers])
        proc.kill()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    gone = _poll(lambda: not any(w.is_running() and w.status() != "zombie" for w in workers))
    assert gone, f"workers outlived their parent: {[w.pid for w in workers if w.is_running()]}"
    assert _poll(lambda: not any(Path(f).exists() for f in mapped)), f"leaked: {mapped}"


def test_ctrl_c_saves_the_model_and_prints_one_line(tmp_path, cleanup):
    """Issue 11 defect 23: SIGINT ends the run cleanly and keeps the last model."""
    proc = _start(tmp_path)
    try:
        cleanup.extend(_wait_for_a_round(proc, tmp_path))
        # Ctrl-C in a terminal signals the whole foreground group: the run and its workers.
        for p in [psutil.Process(proc.pid), *cleanup]:
            p.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    stderr = (tmp_path / "stderr").read_text()
    assert "Traceback" not in stderr, stderr
    assert "interrupted" in stderr, stderr
    assert proc.returncode == 130, stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    model = np.load(run_dir / "model.npz")
    assert len(model.files) >= 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["rounds"] >= 1
    assert str(run_dir) in stderr
