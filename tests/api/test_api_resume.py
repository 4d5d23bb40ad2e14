"""Issue 15 part 3: ``fedstrata run --resume`` after a SIGKILL ends bit-exact.

Each kill test starts ``api.run`` in a child process whose progress callback, once
the checkpoint after round ``K`` is durable and round ``K + 1`` is already recorded
in the run store (its clients' error-feedback residuals written), signals readiness
and waits; the test SIGKILLs it there, resumes the run directory, and compares the
final model (bytes) and ε with an uninterrupted run of the same configuration.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fedstrata
from fedstrata.api import run
from fedstrata.config import FedConfig, load_config
from fedstrata.errors import CheckpointCorrupt, CheckpointError, ConfigError
from fedstrata.monitoring import RunStore

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL semantics: Linux")

SRC = str(Path(fedstrata.__file__).resolve().parents[1])
KILL_AFTER = 2  # the child is killed in round KILL_AFTER + 1, checkpoint after KILL_AFTER
BASE = [
    "sim.workers=0", "data.num_clients=12", "rounds.clients_per_round=6", "rounds.rounds=5",
    "output.report=false", "checkpoint.enabled=true", "checkpoint.disk_every=1",
    "privacy.mechanism=central", "privacy.epsilon=5",
]  # fmt: skip
EF_DP = [  # DP + compression with error feedback (residuals in the client state files)
    "compression.sparsify=topk", "compression.density=0.1", "compression.quantize=8",
    "compression.error_feedback=true",
]  # fmt: skip
SECAGG_DP = [  # DP + secure aggregation + stochastic compression in the ring
    "secagg.enabled=true", "secagg.dropout_rate=0.0", "secagg.max_weight=8",
    "compression.sparsify=randk", "compression.density=0.1", "compression.quantize=8",
    "compression.stochastic=true",
]  # fmt: skip
TREE = [  # the tree driver: DP + secure aggregation at every tier, failing edges
    "data.name=synthetic", "data.num_clients=24", "data.synthetic_max_samples=40",
    "model.kind=logreg", "rounds.clients_per_round=null", "topology.mode=auto",
    "topology.edge_size=6", "topology.edge_min=4", "topology.edge_max=8",
    "topology.region_size=2", "topology.region_min=1", "topology.edge_failure_rate=0.3",
    "secagg.enabled=true", "secagg.dropout_rate=0.1",
]  # fmt: skip
TREE_PARTIALS = [  # no DP: partials re-compressed with residuals, client residuals
    "data.name=synthetic", "data.num_clients=24", "data.synthetic_max_samples=40",
    "model.kind=logreg", "rounds.clients_per_round=12", "topology.mode=auto",
    "topology.edge_size=6", "topology.edge_min=4", "topology.edge_max=8",
    "topology.region_size=2", "topology.region_min=1", "topology.edge_failure_rate=0.3",
    "topology.partial_compression.sparsify=topk", "topology.partial_compression.density=0.2",
    "topology.partial_compression.error_feedback=true", "privacy.mechanism=none", *EF_DP,
]  # fmt: skip

CHILD = """
import sys, time
from pathlib import Path
from fedstrata.api import run
from fedstrata.checkpoint import checkpointer_from_config
from fedstrata.config import load_config

cfg = load_config(overrides=sys.argv[2:])
kill_after = int(sys.argv[1])

def on_round(m):
    if m.round_idx != kill_after + 1:
        return
    run_dir = next(Path(cfg.output.dir).iterdir())
    sink = checkpointer_from_config(cfg.checkpoint, run_dir)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = sink.latest()
        if found is not None and found[0].round >= kill_after + 1:
            print("READY", run_dir, flush=True)
            time.sleep(600)
        time.sleep(0.02)
    raise SystemExit("the checkpoint never became durable")

run(cfg, on_round=on_round)
"""


def _config(tmp: Path, name: str, extra: list[str]) -> list[str]:
    return [*BASE, *extra, f"output.dir={tmp / name}", f"name={name}"]


def _killed_run(tmp: Path, overrides: list[str]) -> Path:
    """Start the run in a child, SIGKILL it mid-run; returns its run directory."""
    env = {**os.environ, "PYTHONPATH": SRC}
    argv = [sys.executable, "-c", CHILD, str(KILL_AFTER), *overrides]
    with (tmp / "child.err").open("wb") as err:
        child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # blocks until READY (or the child dies)
        assert line.startswith("READY"), (line, (tmp / "child.err").read_text()[-2000:])
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return Path(line.split(" ", 1)[1].strip())


def _eps(rounds: list) -> list[float | None]:
    return [None if m.privacy is None else m.privacy.epsilon_spent for m in rounds]


@pytest.mark.parametrize(
    "extra",
    [EF_DP, SECAGG_DP, TREE, TREE_PARTIALS],
    ids=["ef-dp", "secagg-dp", "tree-secagg-dp", "tree-partials"],
)
def test_sigkilled_run_resumes_to_the_same_model_and_epsilon(tmp_path: Path, extra) -> None:
    """Issue 15 part 3: bit-exact model and ε after SIGKILL + resume."""
    reference = run(load_config(overrides=_config(tmp_path, "ref", extra)))
    run_dir = _killed_run(tmp_path, _config(tmp_path, "killed", extra))
    with RunStore.open(run_dir) as store:  # the crash recorded a round past the checkpoint
        assert len(store.rounds()) == KILL_AFTER + 2
    seen: list[int] = []
    cfg = load_config(run_dir / "config.yaml")
    resumed = run(cfg, resume=run_dir, on_resume=seen.append)
    assert seen == [KILL_AFTER + 1]
    a, b = reference.simulation.params, resumed.simulation.params
    assert a.dtype == b.dtype
    assert a.tobytes() == b.tobytes()
    assert _eps(resumed.simulation.rounds) == _eps(reference.simulation.rounds)
    if "privacy.mechanism=none" not in extra:
        assert None not in _eps(reference.simulation.rounds)
    with RunStore.open(run_dir) as store:  # each round once, as the finished run made it
        rows = store.rounds()
        assert [m.round_idx for m in rows] == list(range(5))
        assert [m.loss for m in rows] == [m.loss for m in reference.simulation.rounds]
        assert store.summary()["status"] == "completed"
        assert np.array_equal(store.load_model()[1], a)


def _finished_run(tmp_path: Path, *extra: str) -> tuple[FedConfig, Path]:
    cfg = load_config(overrides=_config(tmp_path, "done", [*EF_DP, *extra]))
    result = run(cfg)
    assert result.run_dir is not None
    return cfg, result.run_dir


def test_resume_refuses_another_configuration(tmp_path: Path) -> None:
    cfg, run_dir = _finished_run(tmp_path)
    other = cfg.model_copy(update={"seed": cfg.seed + 1})
    with pytest.raises(CheckpointCorrupt, match="another configuration"):
        run(other, resume=run_dir)


def test_resume_without_checkpoints_is_refused(tmp_path: Path) -> None:
    cfg, run_dir = _finished_run(tmp_path)
    for path in sorted(run_dir.rglob("*"), reverse=True):
        if "checkpoint" in path.name and path.is_dir():
            for f in path.rglob("*"):
                if f.is_file():
                    f.unlink()
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        run(cfg, resume=run_dir)


def test_resume_with_every_checkpoint_corrupt_is_refused(tmp_path: Path) -> None:
    cfg, run_dir = _finished_run(tmp_path)
    files = [
        p
        for p in run_dir.rglob("*")
        if p.is_file() and "checkpoint" in str(p.relative_to(run_dir))
    ]
    assert files
    for f in files:
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        run(cfg, resume=run_dir)


def test_resume_needs_checkpointing_on(tmp_path: Path) -> None:
    cfg = load_config(overrides=[*BASE, f"output.dir={tmp_path}", "checkpoint.enabled=false"])
    with pytest.raises(ConfigError, match=r"checkpoint\.enabled=false"):
        run(cfg, resume=tmp_path)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_cli_resume_refuses_overrides_and_a_different_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedstrata.cli import app

    _cfg, run_dir = _finished_run(tmp_path)
    cli = CliRunner()
    out = cli.invoke(app, ["run", "--resume", str(run_dir), "--set", "seed=3"])
    assert out.exit_code != 0
    assert "drop --set" in _flat(out.output)
    other = tmp_path / "other.yaml"
    other.write_text((run_dir / "config.yaml").read_text().replace("seed: 0", "seed: 9"))
    out = cli.invoke(app, ["run", str(other), "--resume", str(run_dir)])
    assert out.exit_code != 0
    assert "differs from the run's" in _flat(out.output)
    missing = cli.invoke(app, ["run", "--resume", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0
    assert "(not a run directory?)" in _flat(missing.output)


def test_cli_resume_from_an_older_checkpoint_says_where_and_ends_the_same(
    tmp_path: Path,
) -> None:
    """A checkpoint every 2 rounds of 5: the resume continues after round 4 (the last
    round is truncated and run again) and ends with the same model; with the newest
    checkpoint torn it falls back to the one after round 2, and still ends the same."""
    from typer.testing import CliRunner

    from fedstrata.cli import app

    _cfg, run_dir = _finished_run(tmp_path, "checkpoint.disk_every=2")
    with RunStore.open(run_dir) as store:
        before = store.load_model()[1]
    out = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--quiet"])
    assert out.exit_code == 0, out.output
    assert "resumed" in out.output
    assert "at round 4" in _flat(out.output)
    with RunStore.open(run_dir) as store:
        assert [m.round_idx for m in store.rounds()] == list(range(5))
        assert store.load_model()[1].tobytes() == before.tobytes()
    newest = max((run_dir / "checkpoints").glob("round-*.ckpt"))
    newest.write_bytes(newest.read_bytes()[:-7])  # torn: the resume falls back to round 2
    out = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--quiet"])
    assert out.exit_code == 0, out.output
    assert "at round 2" in _flat(out.output)
    with RunStore.open(run_dir) as store:
        assert store.load_model()[1].tobytes() == before.tobytes()


def test_a_resumed_runs_summary_reports_its_total_wall_time(tmp_path: Path) -> None:
    """The summary's ``wall_time_s`` is the checkpoint's wall time plus the resumed
    segment's (``wall_time_segment_s``), not the segment alone."""
    run_dir = _killed_run(tmp_path, _config(tmp_path, "killed", EF_DP))
    cfg = load_config(run_dir / "config.yaml")
    from fedstrata.checkpoint import checkpointer_from_config
    from fedstrata.checkpoint.snapshot import EngineSnapshot

    sink = checkpointer_from_config(cfg.checkpoint, run_dir)
    found = sink.latest()
    sink.close()
    assert found is not None
    before = EngineSnapshot.from_bytes(found[1])
    with RunStore.open(run_dir) as store:
        kept = [m for m in store.rounds() if m.round_idx < before.rounds_done]
    assert len(kept) == before.rounds_done == KILL_AFTER + 1
    assert before.wall_s >= sum(m.wall_round_s for m in kept) > 0  # the rounds it holds
    resumed = run(cfg, resume=run_dir)
    with RunStore.open(run_dir) as store:
        summary = store.summary()
        every_round_s = sum(m.wall_round_s for m in store.rounds())
    segment = resumed.simulation.wall_s
    assert summary["wall_time_segment_s"] == pytest.approx(segment)
    assert summary["wall_time_s"] == pytest.approx(before.wall_s + segment)
    assert summary["wall_time_s"] >= every_round_s


def test_a_run_in_one_go_has_no_segment_and_its_checkpoints_carry_its_wall_time(
    tmp_path: Path,
) -> None:
    from fedstrata.checkpoint import checkpointer_from_config
    from fedstrata.checkpoint.snapshot import EngineSnapshot

    cfg, run_dir = _finished_run(tmp_path)
    with RunStore.open(run_dir) as store:
        summary = store.summary()
    assert summary["wall_time_segment_s"] is None
    sink = checkpointer_from_config(cfg.checkpoint, run_dir)
    found = sink.latest()
    sink.close()
    assert found is not None
    last = EngineSnapshot.from_bytes(found[1])
    assert last.rounds_done == 5
    assert 0 < last.wall_s <= summary["wall_time_s"]


def test_an_interrupted_run_saves_its_wall_time_and_its_resume_adds_to_it(tmp_path: Path) -> None:
    """Ctrl-C after round 1: ``RunInterrupted``, an ``interrupted`` summary with the
    wall time so far; the resume's summary counts the checkpointed time and its own."""
    from fedstrata.api.runner import RunInterrupted

    cfg = load_config(overrides=_config(tmp_path, "ctrl-c", EF_DP))

    def stop(m) -> None:
        if m.round_idx == 1:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        run(cfg, on_round=stop)
    run_dir = info.value.run_dir
    assert run_dir is not None
    assert info.value.rounds == 1  # round 1 was cut short in its progress callback
    with RunStore.open(run_dir) as store:
        first = store.summary()
    assert first["status"] == "interrupted"
    assert first["wall_time_segment_s"] is None
    assert first["wall_time_s"] > 0
    resumed = run(load_config(run_dir / "config.yaml"), resume=run_dir)
    with RunStore.open(run_dir) as store:
        done = store.summary()
    assert done["status"] == "completed"
    assert done["wall_time_segment_s"] == pytest.approx(resumed.simulation.wall_s)
    assert done["wall_time_s"] > done["wall_time_segment_s"]
