"""``fedstrata alerts``: the alert rules as a Prometheus rules file, and a run's alerts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedstrata.cli.app import _fail, app
from fedstrata.config import load_config
from fedstrata.errors import FedstrataError

MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        min=0, max=65535, help="serve Prometheus metrics on this port (monitoring.metrics_port)"
    ),
]


def metrics_port_override(port: int | None) -> list[str]:
    """The ``--set`` override a ``--metrics-port`` flag stands for."""
    return [] if port is None else [f"monitoring.metrics_port={port}"]


alerts_app = typer.Typer(no_args_is_help=True, help="Alert rules (monitoring.alerts).")
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("export")
def export_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML config (none: the defaults)")] = None,
    *,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override: key.sub=value")
    ] = None,
    round_interval: Annotated[
        float, typer.Option(min=1.0, help="seconds per round (for_rounds -> Prometheus 'for')")
    ] = 60.0,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file (default: stdout)")
    ] = None,
) -> None:
    """Print the configuration's alert rules as a Prometheus alerting-rules file."""
    from fedstrata.monitoring.alerts import prometheus_rules_yaml

    try:
        cfg = load_config(config, None, set_ or [])
        text = prometheus_rules_yaml(cfg.monitoring.alerts, round_interval_s=round_interval)
    except FedstrataError as exc:
        raise _fail(exc) from None
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@alerts_app.command("list")
def list_cmd(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Print the alerts a run fired (round, severity, message)."""
    from fedstrata.monitoring import RunStore

    try:
        with RunStore.open(run_dir) as store:
            alerts = store.alerts()
    except FedstrataError as exc:
        raise _fail(exc) from None
    for alert in alerts:
        typer.echo(f"round {alert.round:>5}  {alert.severity:<8}  {alert.message}")
    if not alerts:
        typer.echo("no alerts")
