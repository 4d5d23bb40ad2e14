"""The published schema: device_profile and model_partitions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the two published tables."""
    op.create_table(
        "device_profile",
        sa.Column("device_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("cpu_score", sa.Float, nullable=False),
        sa.Column("memory_gb", sa.Float, nullable=False),
        sa.Column("network_latency", sa.Float, nullable=False),
        sa.Column("avg_train_time", sa.Float, nullable=True),
        sa.Column("last_update", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "model_partitions",
        sa.Column("partition_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("required_memory", sa.Float, nullable=False),
        sa.Column("compute_intensity", sa.Float, nullable=False),
    )


def downgrade() -> None:
    """Never drops data.

    Raises:
        NotImplementedError: always.
    """
    raise NotImplementedError("registry migrations never drop data")
