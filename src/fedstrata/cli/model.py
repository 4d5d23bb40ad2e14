"""``fedstrata model inspect``: a config's model, its costs and its rounds, before a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedstrata.cli.app import _fail, _human_bytes, _setup_logging, app
from fedstrata.cli.new import project_config
from fedstrata.config import load_config
from fedstrata.errors import FedstrataError

if TYPE_CHECKING:
    from fedstrata.api.assess import Assessment

model_app = typer.Typer(help="Assess a config's model before running it.", no_args_is_help=True)


def _flops(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _summary(a: Assessment) -> Table:
    fp = a.footprint
    table = Table(title=f"model {a.model}", show_header=False)
    activations = "—" if fp.activation_bytes is None else _human_bytes(fp.activation_bytes)
    rows = [
        ("parameters", f"{fp.params:,} ({fp.trainable:,} trainable)"),
        ("FLOPs per example (simulator)", _flops(fp.flops_per_example)),
        ("FLOPs per example (FlopCounterMode)", _flops(fp.counted_flops_per_example)),
        ("precision", fp.precision),
        (f"activations per batch of {fp.batch_size}", activations),
        ("training memory", _human_bytes(fp.train_memory_bytes)),
        ("expected round (whole cohort)", f"{a.round_s:.3g} s (simulated)"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def _codecs(a: Assessment) -> Table:
    table = Table(title="one update per codec chain")
    for col in ("chain", "spec", "bytes", "vs dense"):
        table.add_column(col)
    for c in a.codecs:
        table.add_row(c.name, c.chain, _human_bytes(c.bytes), f"{c.ratio:.1f}x")
    return table


def _classes(a: Assessment) -> Table:
    table = Table(title="one round per device class (simulated seconds)")
    speed = f"x at {a.footprint.precision}"
    cols = ("class", "clients", "GFLOP/s", speed, "memory", "compute", "round", "deadline", "fits")
    for col in cols:
        table.add_column(col)
    for c in a.classes:
        table.add_row(
            c.name, str(c.clients), f"{c.gflops:.3g}", f"{c.speedup:.3g}", f"{c.memory_gb:.3g} GB",
            f"{c.compute_s:.3g}", f"{c.round_s:.3g}", f"{c.deadline_s:.3g}",
            "yes" if c.fits else "[red]no[/red]",
        )  # fmt: skip
    return table


@model_app.command("inspect")
def inspect_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML config or project folder")] = None,
    *,
    preset: Annotated[str | None, typer.Option(help="start from a built-in preset")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override key=value")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """Parameters, FLOPs, memory, update sizes and one round per device class."""
    _setup_logging(0)
    from fedstrata.api.assess import assess

    try:
        result = assess(load_config(project_config(config, preset), preset, set_ or []))
    except FedstrataError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    out = Console()
    for table in (_summary(result), _codecs(result), _classes(result)):
        out.print(table)
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}")


app.add_typer(model_app, name="model")
