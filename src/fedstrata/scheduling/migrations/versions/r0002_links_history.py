"""Bandwidth and availability per device, partition names, per-round history.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add columns with server defaults (existing rows keep their values) and history."""
    with op.batch_alter_table("device_profile") as batch:
        batch.add_column(
            sa.Column("uplink_mbps", sa.Float, nullable=False, server_default=sa.text("10.0"))
        )
        batch.add_column(
            sa.Column("downlink_mbps", sa.Float, nullable=False, server_default=sa.text("50.0"))
        )
        batch.add_column(
            sa.Column("availability", sa.Float, nullable=False, server_default=sa.text("1.0"))
        )
    with op.batch_alter_table("model_partitions") as batch:
        batch.add_column(
            sa.Column("name", sa.String(128), nullable=False, server_default=sa.text("''"))
        )
    op.create_table(
        "round_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "device_id", sa.BigInteger, sa.ForeignKey("device_profile.device_id"), nullable=False
        ),
        sa.Column("round_idx", sa.Integer, nullable=False),
        sa.Column("assigned_work", sa.BigInteger, nullable=False),
        sa.Column("completed_work", sa.BigInteger, nullable=False),
        sa.Column("predicted_s", sa.Float, nullable=True),
        sa.Column("actual_s", sa.Float, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index("ix_round_history_device_round", "round_history", ["device_id", "round_idx"])
    op.create_index("ix_round_history_round", "round_history", ["round_idx"])


def downgrade() -> None:
    """Never drops data.

    Raises:
        NotImplementedError: always.
    """
    raise NotImplementedError("registry migrations never drop data")
