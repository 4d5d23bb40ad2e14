"""``fedstrata run --resume RUN_DIR``: continue an interrupted run (Issue 15 part 3).

A run with ``checkpoint.enabled`` writes an engine snapshot after every round to
its checkpoint tiers (:mod:`fedstrata.api.checkpoints`). Resuming:

1. the configuration must be the run's own (its ``config.yaml``; a snapshot records
   the digest of the configuration that wrote it and a different one is refused);
2. the newest checkpoint that verifies is loaded (a corrupt newest one is skipped
   with a warning by the checkpoint stores);
3. the clients' state files (error-feedback residuals ...) are put back as they were
   at that round;
4. the run store is reopened and **truncated**: rounds recorded after the checkpoint
   (the crash came later) are deleted and recorded again by the resumed run, so
   every round appears once, as the finished run computed it;
5. the driver continues from the snapshot, bit for bit as an uninterrupted run
   (``tests/api/test_api_resume.py``).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from fedstrata.api.checkpoints import RoundCheckpoints, config_digest, driver_of
from fedstrata.checkpoint.snapshot import EngineSnapshot
from fedstrata.config import FedConfig, dump_config
from fedstrata.core.params import FloatVector
from fedstrata.core.state_files import StateDirSnapshot
from fedstrata.errors import CheckpointCorrupt, CheckpointError, ConfigError
from fedstrata.monitoring import RunStarted, RunStore, new_run_dir
from fedstrata.sim import SimulationResult
from fedstrata.sim.fedeval import FederatedEvaluator

__all__ = ["OpenedRun", "checkpoints", "open_run", "reopen_run", "resumed_progress"]

log = logging.getLogger(__name__)

CLIENT_STATE = "client_state"
"""The clients' state directory inside a run directory."""


@dataclass(frozen=True)
class OpenedRun:
    """A run's store (None without one) and, when resuming, the snapshot to continue."""

    store: RunStore | None
    snapshot: EngineSnapshot | None = None


def open_run(config: FedConfig, run_name: str | None, num_clients: int, size: int) -> OpenedRun:
    """A fresh run directory and store (none when ``output.run_store`` is off)."""
    if not config.output.run_store:
        return OpenedRun(None)
    run_dir = new_run_dir(config.output.dir, run_name or config.name)
    store = RunStore.create(run_dir)
    store.emit(RunStarted(run_dir.name, dump_config(config), num_clients, size))
    return OpenedRun(store)


def reopen_run(config: FedConfig, run_dir: Path) -> OpenedRun:
    """The interrupted run in ``run_dir`` at its newest good checkpoint.

    Raises:
        ConfigError: ``config`` does not checkpoint, or runs a driver that cannot resume.
        CheckpointError: no readable checkpoint.
        CheckpointCorrupt: the checkpoint is of another configuration or driver.
        DataError: ``run_dir`` is not a run directory.
    """
    if not config.checkpoint.enabled:
        raise ConfigError(
            f"cannot resume {run_dir}: its configuration has checkpoint.enabled=false "
            "(no checkpoints were written)"
        )
    from fedstrata.checkpoint import checkpointer_from_config  # deferred: fsspec

    sink = checkpointer_from_config(config.checkpoint, run_dir)
    try:
        found = sink.latest()
    finally:
        sink.close()
    if found is None:
        raise CheckpointError(
            f"{run_dir} has no readable checkpoint to resume from (did the run complete "
            "a round with checkpoint.enabled?)"
        )
    snap = _checked(EngineSnapshot.from_bytes(found[1]), config, run_dir)
    StateDirSnapshot(run_dir / CLIENT_STATE).restore(snap.part("client_state"))
    store = RunStore.reopen(run_dir, snap.rounds_done)
    log.info("resuming %s after round %d", run_dir, snap.rounds_done - 1)
    return OpenedRun(store, snap)


def _checked(snap: EngineSnapshot, config: FedConfig, run_dir: Path) -> EngineSnapshot:
    if snap.config_digest != config_digest(config):
        raise CheckpointCorrupt(
            f"the checkpoint in {run_dir} (after round {snap.rounds_done - 1}) was written "
            "by another configuration than the one given: resume with the run's own "
            f"({run_dir / 'config.yaml'})"
        )
    if snap.driver != driver_of(config):
        raise CheckpointCorrupt(
            f"the checkpoint in {run_dir} is of the {snap.driver} driver, not {driver_of(config)}"
        )
    return snap


def checkpoints(
    config: FedConfig, store: RunStore | None, stack: ExitStack
) -> RoundCheckpoints | None:
    """The drivers' ``on_state`` for ``checkpoint.enabled`` (None when off).

    Raises:
        ConfigError: checkpointing without a run store (the tiers live in the run dir).
    """
    if not config.checkpoint.enabled:
        return None
    if store is None:
        raise ConfigError("checkpoint.enabled needs output.run_store=true (the run directory)")
    from fedstrata.checkpoint import checkpointer_from_config  # deferred: fsspec

    sink = checkpointer_from_config(config.checkpoint, store.path)
    stack.callback(sink.close)
    digest = config_digest(config)
    ckpt = RoundCheckpoints(sink, store.path / CLIENT_STATE, driver_of(config), digest)
    stack.callback(ckpt.close)
    return ckpt


def resumed_progress(
    params: FloatVector,
    store: RunStore | None,
    fed_eval: FederatedEvaluator | None,
    snap: EngineSnapshot | None,
) -> SimulationResult:
    """The run's progress object; resuming, it holds the rounds kept in the store."""
    progress = SimulationResult(params=params)
    if snap is None or store is None:
        return progress
    progress.rounds = store.rounds()
    if fed_eval is not None:
        fed_eval.history.extend(store.fed_evals())
    return progress
