"""Alembic migrations of the device registry; run by ``Registry.open`` (upgrade to head)."""
