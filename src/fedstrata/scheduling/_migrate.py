"""Run the registry's Alembic migrations programmatically (no ``alembic.ini``)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from fedstrata.errors import RegistryError
from fedstrata.scheduling._sql import open_engine, registry_url

__all__ = ["current_revision", "migrate", "upgrade"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision`` in one transaction.

    Raises:
        RegistryError: unknown revision (e.g. a database written by a newer fedstrata),
            or the database failed.
    """
    try:
        with engine.begin() as conn:
            command.upgrade(_config(conn), revision)
    except CommandError as exc:
        raise RegistryError(f"registry migration to {revision!r} failed: {exc}") from exc
    except SQLAlchemyError as exc:
        raise RegistryError(f"registry at {engine.url!r} unreachable or broken: {exc}") from exc


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` for an empty database).

    Raises:
        RegistryError: the database is unreachable.
    """
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise RegistryError(f"registry at {engine.url!r} unreachable: {exc}") from exc


def migrate(url: str | os.PathLike[str], revision: str = "head") -> None:
    """Upgrade the registry at ``url`` (URL or SQLite path) to ``revision``.

    ``Registry.open`` does this to head on every open; use this to stop at an older
    revision (tests) or to migrate without opening.

    Raises:
        RegistryError: see :func:`upgrade`.
        MissingDependencyError: a PostgreSQL URL without ``fedstrata[postgres]``.
    """
    engine = open_engine(registry_url(url))
    try:
        upgrade(engine, revision)
    finally:
        engine.dispose()
