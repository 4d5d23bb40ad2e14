"""``fedstrata dashboard RUN_DIR``: the web dashboard of a finished or running run."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedstrata.cli.app import _fail, _setup_logging, app, console
from fedstrata.errors import ConfigError, DataError, FedstrataError

if TYPE_CHECKING:
    from fedstrata.monitoring.alerts import AlertRule
    from fedstrata.monitoring.dashboard import Budget

logger = logging.getLogger(__name__)


@app.command()
def dashboard(
    run_dir: Annotated[
        Path,
        typer.Argument(help="a run directory, or a folder of runs (output.dir: its newest run)"),
    ],
    *,
    live: Annotated[
        bool,
        typer.Option(help="the run is being written: wait for its store and follow it"),
    ] = False,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: a free one)")] = 8050,
    wait_s: Annotated[
        float, typer.Option(min=0, help="with --live: how long to wait for the run store")
    ] = 60.0,
    poll_ms: Annotated[int, typer.Option(min=50, help="how often the page polls")] = 500,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
) -> None:
    """Serve the web dashboard of RUN_DIR: the twelve metrics, devices, tiers, privacy,
    alerts. With --live it follows a run still being written (charts update in place)."""
    _setup_logging(verbose)
    import uvicorn

    from fedstrata.monitoring.dashboard import default_catalogue, open_dashboard

    try:
        target = _wait_for_run(run_dir, wait_s if live else 0.0)
        budget, rules = _run_settings(target)
        catalogue = default_catalogue() if rules is None else default_catalogue(rules)
        dash = open_dashboard(
            target, live=live, poll_ms=poll_ms, budget=budget, catalogue=catalogue
        )
    except FedstrataError as exc:
        raise _fail(exc) from None
    console.print(
        f"[bold]fedstrata dashboard[/] of {target} on http://{host}:{port}/", soft_wrap=True
    )
    uvicorn.run(dash, host=host, port=port, log_level="warning")


def _wait_for_run(path: Path, wait_s: float) -> Path:
    """The run directory at ``path`` (see ``find_run_dir``), waiting up to ``wait_s``."""
    from fedstrata.monitoring.dashboard import find_run_dir

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return find_run_dir(path)
        except DataError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.2)


def _run_settings(run_dir: Path) -> tuple[Budget | None, tuple[AlertRule, ...] | None]:
    """The run's privacy budget (None without DP) and alert rules (None: no stored
    configuration, so the defaults), read from its ``config.yaml``."""
    from fedstrata.config import load_config
    from fedstrata.monitoring import CONFIG_FILE
    from fedstrata.monitoring.dashboard import Budget

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None, None
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        logger.warning("%s does not load (%s): default alert rules, no privacy plan", path, exc)
        return None, None
    rules = tuple(cfg.monitoring.alerts)
    if not cfg.privacy.enabled:
        return None, rules
    planned = cfg.privacy.planned_rounds or cfg.rounds.rounds
    return Budget(epsilon=cfg.privacy.epsilon, planned_rounds=planned), rules
