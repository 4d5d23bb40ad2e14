"""``fedstrata scenario NAME``: a published case's baseline and fedstrata side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedstrata.cli.app import _fail, _setup_logging, app
from fedstrata.errors import FedstrataError


@app.command("scenario")
def scenario_cmd(
    name: Annotated[
        str | None, typer.Argument(help="scenario (a preset); none: list them")
    ] = None,
    *,
    quick: Annotated[
        bool, typer.Option(help="CI size: the scenario's quick overrides (most: 1 round per arm)")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="report folder (default: runs/scenario-NAME)")
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
) -> None:
    """Run a published case's baseline and fedstrata's configuration; write the report
    (scenario.md, scenario.json, compare.html) with the published figure beside both."""
    _setup_logging(verbose)
    from fedstrata.scenarios import SCENARIOS, get_scenario, render_markdown, run_scenario

    if name is None:
        for s in SCENARIOS.values():
            typer.echo(f"{s.name}: {s.case}")
        return
    try:
        scenario = get_scenario(name)
        folder = out or Path("runs") / f"scenario-{name}"
        comparison = run_scenario(scenario, folder, quick=quick)
    except FedstrataError as exc:
        raise _fail(exc) from None
    typer.echo(render_markdown(comparison))
    typer.echo(f"report: {folder / 'scenario.md'}, {folder / 'compare.html'}")
