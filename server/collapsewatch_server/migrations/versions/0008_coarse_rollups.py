"""coarse rollup levels kept behind a series' end

- ``series.coarse_until``: the rollup levels coarser than the first hold the series' points
  before this step (a multiple of the finest bin width); the finest level holds them all.
  Ingest then writes one level per series and batch, and folds the finest bins into the
  coarser levels every ``rollups.ROLL_STEPS`` steps; a chart merges the finest bins past the
  mark into the coarse ones it reads (``repositories.point_rollups.read``). Series stored
  before this revision have every level complete: their mark is past their last step.

Revision ID: 0008_coarse
Revises: 0007_data
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0008_coarse"
down_revision = "0007_data"
branch_labels = None
depends_on = None

#: ``rollups.LEVELS[0]`` when this revision was written (a migration does not follow the code).
FINEST = 16


def upgrade() -> None:
    # a plain ADD COLUMN (no table rebuild on SQLite: rebuilding ``series`` would cascade-delete
    # its points); the server default marks new series as having nothing in the coarse levels
    op.add_column(
        "series", sa.Column("coarse_until", sa.BigInteger(), nullable=False, server_default="0")
    )
    # steps are never negative: integer division floors on both backends
    op.execute(
        f"UPDATE series SET coarse_until = (last_step / {FINEST} + 1) * {FINEST} "
        "WHERE last_step IS NOT NULL"
    )


def downgrade() -> None:
    # The revisions before this one keep every level complete: the coarse levels of a series
    # with finest bins past its mark are built again from all its finest bins.
    from collapsewatch_server import rollups

    conn = op.get_bind()
    names = "first_step, last_step, last, count, nonfinite, low, low_step, high, high_step"
    behind = conn.execute(
        sa.text(
            "SELECT DISTINCT r.series_id FROM point_rollups r JOIN series ON series.id = "
            f"r.series_id WHERE r.level = 0 AND r.bin >= series.coarse_until / {FINEST}"
        )
    ).all()
    insert = sa.text(
        f"INSERT INTO point_rollups (series_id, level, bin, {names}) VALUES (:series_id, "
        ":level, :bin, :first_step, :last_step, :last, :count, :nonfinite, :low, :low_step, "
        ":high, :high_step)"
    )
    for (sid,) in behind:
        rows = conn.execute(
            sa.text(
                f"SELECT {names} FROM point_rollups WHERE series_id = :sid AND level = 0 "
                "ORDER BY bin"
            ),
            {"sid": sid},
        ).all()
        cols = dict(zip(names.split(", "), zip(*rows, strict=True), strict=True))
        finest = rollups.Bins(
            series=np.full(len(rows), sid, dtype=np.int64),
            **{
                name: _array(values, floating=name in ("last", "low", "high"))
                for name, values in cols.items()
            },
        )
        conn.execute(
            sa.text("DELETE FROM point_rollups WHERE series_id = :sid AND level > 0"), {"sid": sid}
        )
        conn.execute(
            insert,
            [
                {
                    "series_id": sid,
                    "level": level,
                    "bin": int(bins.first_step[i]) // rollups.LEVELS[level],
                    **{name: _plain(getattr(bins, name)[i]) for name in cols},
                }
                for level, bins in rollups.coarse_levels(finest)
                for i in range(len(bins))
            ],
        )
    op.execute("ALTER TABLE series DROP COLUMN coarse_until")


def _array(values: tuple[object, ...], *, floating: bool) -> np.ndarray:
    """A column as numbers: NULL as NaN (floats) or 0 (integers)."""
    if floating:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array([0 if v is None else v for v in values], dtype=np.int64)


def _plain(value: np.generic) -> int | float | None:
    """A numpy number as a Python one; NaN as NULL."""
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    return int(value)
