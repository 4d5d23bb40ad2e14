"""Shared pieces of the command line: the app, console, logging set-up, errors."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from fedstrata import __version__
from fedstrata.errors import FedstrataError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="fedstrata: fast, private, hierarchical federated learning.",
)


console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fedstrata {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Options before the command (``fedstrata --version``)."""


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )


def _fail(exc: FedstrataError) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"
