"""Alembic environment: runs on the connection handed over by ``Registry.open``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from fedstrata.errors import RegistryError
from fedstrata.scheduling._tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RegistryError("registry migrations run only through Registry.open / migrate()")
_run(connection)
