"""Shared pieces of the command line: the app, console, logging set-up, errors."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.logging import RichHandler

from fedstrata.errors import FedstrataError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="fedstrata: fast, private, hierarchical federated learning.",
)


console = Console(stderr=True)


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
