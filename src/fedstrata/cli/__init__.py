"""The ``fedstrata`` command line (typer). The only place that configures logging."""

from fedstrata.cli import (  # noqa: F401  (they register their commands)
    commands,
    dashboard,
    deploy,
    model,
    monitor,
    new,
    scenario,
)
from fedstrata.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
