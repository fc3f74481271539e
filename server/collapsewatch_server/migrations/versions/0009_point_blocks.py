"""points stored in blocks

- ``points.last_step`` and ``points.packed``: a row may hold a block of a series' points (a
  scalar column of an ingest batch, as it came): ``step`` and ``value`` are its first point,
  ``last_step`` its last step and ``packed`` every step and value (``codec.pack_points``).
  Rows stored before this revision are single points (both NULL).
- ``ix_points_blocks``: the blocks of a series by their last step, a partial index of those
  rows only (which series have blocks; the blocks reaching into a range of steps).

Revision ID: 0009_blocks
Revises: 0008_coarse
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from alembic import op

revision = "0009_blocks"
down_revision = "0008_coarse"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMNs: no table rebuild of the largest table on SQLite
    op.add_column("points", sa.Column("last_step", sa.BigInteger(), nullable=True))
    op.add_column("points", sa.Column("packed", sa.LargeBinary(), nullable=True))
    op.create_index(
        "ix_points_blocks",
        "points",
        ["series_id", "last_step"],
        sqlite_where=sa.text("packed IS NOT NULL"),
        postgresql_where=sa.text("packed IS NOT NULL"),
    )


def downgrade() -> None:
    # A block becomes the single points it holds, so that the revisions before read them.
    from collapsewatch_server.codec import unpack_points

    conn = op.get_bind()
    blocks = conn.execute(
        sa.text("SELECT id, series_id, packed FROM points WHERE packed IS NOT NULL")
    ).all()
    for block_id, series_id, packed in blocks:
        steps, values = unpack_points(packed)
        conn.execute(sa.text("DELETE FROM points WHERE id = :id"), {"id": block_id})
        conn.execute(
            sa.text("INSERT INTO points (series_id, step, value) VALUES (:sid, :step, :value)"),
            [
                {"sid": series_id, "step": st, "value": v if math.isfinite(v) else None}
                for st, v in zip(steps.tolist(), values.tolist(), strict=True)
            ],
        )
    op.drop_index("ix_points_blocks", table_name="points")
    with op.batch_alter_table("points") as batch:
        batch.drop_column("packed")
        batch.drop_column("last_step")
