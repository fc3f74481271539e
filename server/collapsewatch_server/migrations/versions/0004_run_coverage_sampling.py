"""runs: what the SDK watches per collapse family, and how the run was sampled over time

``coverage`` holds the SDK's per-family summary (watched, or what to add); ``sampling`` the
sampling interval as it changed, ``[[first step, every], ...]``.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("coverage", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("sampling", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("sampling")
        batch.drop_column("coverage")
