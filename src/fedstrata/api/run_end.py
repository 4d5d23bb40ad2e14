"""How a run ends: its summary and model saved to the run directory, an interrupted
run's partial results, and the warnings at the end (used by :func:`fedstrata.api.run`)."""

from __future__ import annotations

import logging
from pathlib import Path

from fedstrata.api.components import save_torch_model
from fedstrata.config import FedConfig
from fedstrata.core.training import Trainer
from fedstrata.monitoring import RunStatus, RunStore, RunTotals, write_report
from fedstrata.monitoring.report_job import spawn_report
from fedstrata.sim import SimulationResult

__all__ = ["RunInterrupted", "finish_store", "interrupted", "spawned", "warn_if_most_failed"]

log = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or another KeyboardInterrupt) stopped a run.

    The run directory, if any, holds the model of the last completed round
    (``model.npz``), the rounds so far, and a summary with status ``interrupted``.

    Attributes:
        run_dir: the run directory, or None without a run store.
        rounds: rounds completed before the interruption.
    """

    def __init__(self, run_dir: Path | None, rounds: int) -> None:
        super().__init__(f"interrupted after {_rounds(rounds)}")
        self.run_dir, self.rounds = run_dir, rounds


def spawned(run_dir: Path) -> bool:
    """Start the report's process; on failure write the report here."""
    try:
        spawn_report(run_dir)
    except OSError as exc:
        log.warning("could not write the report in the background (%s); writing it now", exc)
        write_report(run_dir)
        return False
    return True


def interrupted(
    store: RunStore | None,
    config: FedConfig,
    progress: SimulationResult | None,
    trainer: Trainer,
    elapsed_s: float,
    *,
    prior_wall_s: float | None,
) -> RunInterrupted:
    """Save what an interrupted run has (model of the last completed round, summary)."""
    rounds = 0 if progress is None else len(progress.rounds)
    log.info("interrupted after %d rounds", rounds)
    if store is None:
        return RunInterrupted(None, rounds)
    if progress is None:  # interrupted while building: nothing trained yet
        store.close()  # records the run as interrupted
        return RunInterrupted(store.path, 0)
    progress.wall_s = elapsed_s
    progress.sim_time_s = progress.rounds[-1].sim_time_s if progress.rounds else 0.0
    progress.stopped_reason = f"interrupted after {_rounds(rounds)}"
    try:
        run_dir = finish_store(
            store, config, progress, trainer, RunStatus.INTERRUPTED, prior_wall_s=prior_wall_s
        )
    except BaseException:
        store.close()
        raise
    return RunInterrupted(run_dir, rounds)


def _rounds(n: int) -> str:
    return f"{n} round{'' if n == 1 else 's'}"


def warn_if_most_failed(result: SimulationResult) -> None:
    """One warning at the end when most client updates of the run failed."""
    failed = sum(m.clients_failed for m in result.rounds)
    used = sum(m.clients_completed for m in result.rounds)
    if failed > used:
        log.warning(
            "%d of %d client updates failed in %d rounds: the final model learned from "
            "few or none of them (see the per-round warnings for the reasons)",
            failed,
            failed + used,
            len(result.rounds),
        )


def finish_store(
    store: RunStore,
    config: FedConfig,
    result: SimulationResult,
    trainer: Trainer,
    status: RunStatus | None = None,
    *,
    report: bool = True,
    prior_wall_s: float | None = None,
) -> Path:
    """Save the model and write the summary; ``prior_wall_s``: a resumed run's wall time
    before this segment (the summary reports the total and the segment)."""
    totals = RunTotals()
    for metrics in result.rounds:
        totals.add(metrics)
    store.save_model(trainer.spec, result.params)
    save_torch_model(trainer, result.params, store.path)
    if status is None:
        status = RunStatus.STOPPED if result.stopped_reason else RunStatus.COMPLETED
    store.emit(
        totals.finish(
            store.path.name,
            status,
            wall_time_s=result.wall_s + (prior_wall_s or 0.0),
            stop_reason=result.stopped_reason or "",
            segment_wall_time_s=None if prior_wall_s is None else result.wall_s,
        )
    )
    store.close()
    if config.output.report and report:
        write_report(store.path)
    return store.path
