"""Issue 15 part 6: a simulation with checkpoints records their times per round."""

from __future__ import annotations

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.monitoring import RunStore
from fedstrata.monitoring.report import render_report

ROUNDS = 4
SMALL = [
    "sim.workers=0", "data.num_clients=6", f"rounds.rounds={ROUNDS}",
    "rounds.clients_per_round=5", "model.kind=logreg", "client.steps=3", "client.epochs=null",
    "output.report=false", "output.progress=false",
]  # fmt: skip


def test_checkpoint_times_are_in_the_rounds_records(tmp_path):
    """Hand check: every tier's save is reported once, in a round after the one it
    checkpoints (the tiers write in the background, after the round's record); the
    snapshot's critical-path time from the round after the first snapshot on."""
    cfg = load_config(
        overrides=[
            *SMALL, f"output.dir={tmp_path}", "checkpoint.enabled=true",
            "checkpoint.memory_every=1", "checkpoint.disk_every=2",
        ]
    )  # fmt: skip
    result = run(cfg)
    with RunStore.open(result.run_dir) as store:
        rounds = store.rounds()
    assert rounds[0].resilience is None  # no snapshot before the first round's record
    records = [m.resilience for m in rounds[1:]]
    assert all(r is not None for r in records)
    assert all(r.ckpt_critical_s is not None and r.ckpt_critical_s > 0 for r in records)
    assert all(r.failovers is None and r.recovery_s is None for r in records)
    # snapshots after rounds 0..2 can be reported (round 3's comes after the last record);
    # the disk tier (every 2 rounds done) writes after round 1 (and 3): at most one report
    memory = [r.ckpt_memory_s for r in records if r.ckpt_memory_s is not None]
    disk = [r.ckpt_disk_s for r in records if r.ckpt_disk_s is not None]
    assert 1 <= len(memory) <= ROUNDS - 1
    assert len(disk) <= 1
    assert all(s > 0 for s in memory + disk)
    assert all(r.ckpt_object_s is None for r in records)
    with RunStore.open(result.run_dir) as store:
        html = render_report(store)
    assert "<h2>Resilience</h2>" in html or ">Resilience<" in html
    assert "on the round&#x27;s path" in html or "on the round's path" in html
    assert "failovers" not in html  # a simulation has no center to lose


def test_without_checkpoints_there_is_no_resilience_record(tmp_path):
    result = run(load_config(overrides=[*SMALL, f"output.dir={tmp_path}"]))
    with RunStore.open(result.run_dir) as store:
        assert all(m.resilience is None for m in store.rounds())
        assert ">Resilience<" not in render_report(store)
