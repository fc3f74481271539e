"""run tags, and when raw statistic records arrived

- ``run_tags``: labels a run carries (from ``watch(tags=[...])`` or the dashboard), one row
  each, so the runs list filters on a tag with an index instead of reading JSON;
- ``stat_records.received_at`` (indexed): the retention policy
  (``COLLAPSEWATCH_RAW_RETENTION_DAYS``) deletes records older than it. Records stored before
  this revision have none; their run's last data stands in for it.

Revision ID: 0007_data
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_data"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_tags",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "tag"),
    )
    op.create_index("ix_run_tags_tag", "run_tags", ["tag"])
    with op.batch_alter_table("stat_records") as batch:
        batch.add_column(sa.Column("received_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_stat_records_received_at", "stat_records", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_stat_records_received_at", table_name="stat_records")
    with op.batch_alter_table("stat_records") as batch:
        batch.drop_column("received_at")
    op.drop_index("ix_run_tags_tag", table_name="run_tags")
    op.drop_table("run_tags")
