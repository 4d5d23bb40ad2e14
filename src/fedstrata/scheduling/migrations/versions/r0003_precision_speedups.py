"""Per-device training speed at bf16 and fp16 relative to fp32 (Issue 17).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the two factors; existing devices get 1.0 (no speedup)."""
    with op.batch_alter_table("device_profile") as batch:
        batch.add_column(
            sa.Column("bf16_speedup", sa.Float, nullable=False, server_default=sa.text("1.0"))
        )
        batch.add_column(
            sa.Column("fp16_speedup", sa.Float, nullable=False, server_default=sa.text("1.0"))
        )


def downgrade() -> None:
    """Never drops data.

    Raises:
        NotImplementedError: always.
    """
    raise NotImplementedError("registry migrations never drop data")
