"""ingest queue, batch content hashes, series counters and point rollups

- ``ingest_queue``: batches accepted and not yet processed (the answer no longer waits for
  indicators and rules);
- ``ingested_batches.content_hash``: a batch id re-used with other content is a conflict;
- ``series.points``, ``first_step``, ``last_step``, ``last_value``: counters kept at ingest, so
  listings never count points; filled here from the stored points;
- ``point_rollups``: per-bin summaries at a few resolutions (``collapsewatch_server.rollups``),
  built here for the stored points, so charts of long series read a bounded number of rows;
- the covering index of 0003 goes: the charts that needed it read rollups now, and every
  index costs each stored point a write.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ingest_queue",
        sa.Column("seq", BigId, nullable=False, autoincrement=True),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("batch_id"),
    )
    op.create_index("ix_ingest_queue_run_seq", "ingest_queue", ["run_id", "seq"])
    op.create_table(
        "point_rollups",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("bin", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("nonfinite", sa.BigInteger(), nullable=False),
        sa.Column("first_step", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("last", sa.Float(), nullable=True),
        sa.Column("low", sa.Float(), nullable=True),
        sa.Column("low_step", sa.BigInteger(), nullable=True),
        sa.Column("high", sa.Float(), nullable=True),
        sa.Column("high_step", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("series_id", "level", "bin"),
    )
    # plain ADD COLUMNs (no table rebuild on SQLite: rebuilding ``series`` would cascade-delete
    # its points); the server default fills the counter of existing rows
    with op.batch_alter_table("ingested_batches") as batch:
        batch.add_column(sa.Column("content_hash", sa.String(length=64), nullable=True))
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("points", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("first_step", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("last_step", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("last_value", sa.Float(), nullable=True))
    op.drop_index("ix_points_series_step_value", table_name="points")
    _fill_counters_and_rollups()


def _fill_counters_and_rollups() -> None:
    """Counters and rollups of the points stored before this revision, a series at a time."""
    from collapsewatch_server import rollups

    conn = op.get_bind()
    series_ids = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT series_id FROM points"))]
    insert = sa.text(
        "INSERT INTO point_rollups (series_id, level, bin, count, nonfinite, first_step, "
        "last_step, last, low, low_step, high, high_step) VALUES (:series_id, :level, :bin, "
        ":count, :nonfinite, :first_step, :last_step, :last, :low, :low_step, :high, :high_step)"
    )
    for sid in series_ids:
        rows = conn.execute(
            sa.text("SELECT step, value FROM points WHERE series_id = :sid ORDER BY step"),
            {"sid": sid},
        ).all()
        steps = np.array([r[0] for r in rows], dtype=np.int64)
        values = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
        conn.execute(
            sa.text(
                "UPDATE series SET points = :n, first_step = :first, last_step = :last, "
                "last_value = :value WHERE id = :sid"
            ),
            {
                "n": len(rows),
                "first": int(steps[0]),
                "last": int(steps[-1]),
                "value": rows[-1][1],
                "sid": sid,
            },
        )
        points = rollups.of_points(np.full(steps.size, sid, dtype=np.int64), steps, values)
        params = []
        for level, (bins, width) in enumerate(
            zip(rollups.levels_of(points), rollups.LEVELS, strict=True)
        ):
            params += [
                {
                    "series_id": sid,
                    "level": level,
                    "bin": int(bins.first_step[i]) // width,
                    "count": int(bins.count[i]),
                    "nonfinite": int(bins.nonfinite[i]),
                    "first_step": int(bins.first_step[i]),
                    "last_step": int(bins.last_step[i]),
                    "last": _float(bins.last[i]),
                    "low": _float(bins.low[i]),
                    "low_step": int(bins.low_step[i]),
                    "high": _float(bins.high[i]),
                    "high_step": int(bins.high_step[i]),
                }
                for i in range(len(bins))
            ]
        conn.execute(insert, params)


def _float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def downgrade() -> None:
    op.create_index(
        "ix_points_series_step_value", "points", ["series_id", "step", "value"], unique=False
    )
    # plain DROP COLUMNs (SQLite >= 3.35): a rebuild of ``series`` would cascade to its points
    for column in ("last_value", "last_step", "first_step", "points"):
        op.execute(f"ALTER TABLE series DROP COLUMN {column}")
    op.execute("ALTER TABLE ingested_batches DROP COLUMN content_hash")
    op.drop_table("point_rollups")
    op.drop_index("ix_ingest_queue_run_seq", table_name="ingest_queue")
    op.drop_table("ingest_queue")
