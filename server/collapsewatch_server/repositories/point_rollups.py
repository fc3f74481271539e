"""Point rollups (``collapsewatch_server.rollups``): new bins merged into the stored ones at
ingest, a series' finest bins folded into its coarser levels when it has grown past its mark,
bins of one level read back for charts (the coarse ones with the finest bins past the mark)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
from sqlalchemy import Executable, select, text
from sqlalchemy.orm import Session

from collapsewatch_server import rollups
from collapsewatch_server.repositories.sql import execute_many
from collapsewatch_server.rollups import LEVELS, Bins
from collapsewatch_server.tables import PointRollup

_COLUMNS = (
    "series_id, level, bin, count, nonfinite, first_step, last_step, last, low, low_step, "
    "high, high_step"
)
# A stored bin and a new one merge: counts add, the extremes keep the more extreme (a bin
# without a finite value has NULL extremes), first and last follow the steps.
_MERGE = (
    f"INSERT INTO point_rollups ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (series_id, level, bin) DO UPDATE SET "
    "count = point_rollups.count + excluded.count, "
    "nonfinite = point_rollups.nonfinite + excluded.nonfinite, "
    "first_step = CASE WHEN excluded.first_step < point_rollups.first_step "
    "THEN excluded.first_step ELSE point_rollups.first_step END, "
    "last = CASE WHEN excluded.last_step > point_rollups.last_step "
    "THEN excluded.last ELSE point_rollups.last END, "
    "last_step = CASE WHEN excluded.last_step > point_rollups.last_step "
    "THEN excluded.last_step ELSE point_rollups.last_step END, "
    "low_step = CASE WHEN excluded.low < point_rollups.low OR point_rollups.low IS NULL "
    "THEN excluded.low_step ELSE point_rollups.low_step END, "
    "low = CASE WHEN excluded.low < point_rollups.low OR point_rollups.low IS NULL "
    "THEN excluded.low ELSE point_rollups.low END, "
    "high_step = CASE WHEN excluded.high > point_rollups.high OR point_rollups.high IS NULL "
    "THEN excluded.high_step ELSE point_rollups.high_step END, "
    "high = CASE WHEN excluded.high > point_rollups.high OR point_rollups.high IS NULL "
    "THEN excluded.high ELSE point_rollups.high END"
)


def _nullable(values: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in values.tolist()]  # NaN (v != v) as NULL


def add(s: Session, levels: Sequence[tuple[int, Bins]]) -> None:
    """Merge new bins (``(level, bins)`` pairs, e.g. ``rollups.levels_at_ingest``) into the
    stored ones.

    (In the SET list every CASE reads the row's old values: SQL evaluates all of them before
    it assigns any, so ``low`` is compared before it changes on both backends.)"""
    rows: list[tuple[object, ...]] = []
    for level, bins in levels:
        width = LEVELS[level]
        rows += zip(
            bins.series.tolist(),
            repeat(level),
            (bins.first_step // width).tolist(),
            bins.count.tolist(),
            bins.nonfinite.tolist(),
            bins.first_step.tolist(),
            bins.last_step.tolist(),
            _nullable(bins.last),
            _nullable(bins.low),
            bins.low_step.tolist(),
            _nullable(bins.high),
            bins.high_step.tolist(),
            strict=False,  # repeat() is endless
        )
    # in key order: concurrent writers of one series lock its rows in the same order
    rows.sort(key=itemgetter(0, 1, 2))
    execute_many(s, _MERGE, rows)


_BIN_COLUMNS = (
    "r.series_id, r.first_step, r.last_step, r.last, r.count, r.nonfinite, r.low, r.low_step, "
    "r.high, r.high_step"
)
# The finest bins past each series' mark (``bin >= mark / width``: an index range per series;
# marks and steps are never negative, so integer division floors on both backends).
_PAST_MARK = (
    f"SELECT {_BIN_COLUMNS} FROM point_rollups r JOIN series ON series.id = r.series_id "
    f"WHERE r.series_id IN ({{ids}}) AND r.level = 0 AND r.bin >= series.coarse_until / {LEVELS[0]}"
)


def roll(s: Session, series_ids: Sequence[int]) -> None:
    """Fold the finest bins of these series from their mark up to the bin holding their last
    step (as the counters say, updated first) into the coarser levels, and move the marks
    there (``rollups.mark_after``)."""
    if not series_ids:
        return
    ids = ", ".join(str(int(sid)) for sid in sorted(series_ids))
    finest = _bins(
        _driver_rows(
            s,
            text(
                _PAST_MARK.format(ids=ids) + f" AND r.bin < series.last_step / {LEVELS[0]} "
                "ORDER BY r.series_id, r.bin"
            ),
        )
    )
    add(s, rollups.coarse_levels(finest))
    s.execute(
        text(
            f"UPDATE series SET coarse_until = last_step / {LEVELS[0]} * {LEVELS[0]} "
            f"WHERE id IN ({ids})"
        )
    )


def read(s: Session, series_ids: Sequence[int], level: int) -> Bins:
    """Every bin of ``level`` of these series, sorted by (series, step): the stored ones, and
    for a coarse level, with the finest bins past each series' mark merged in."""
    r = PointRollup
    stored = _bins(
        _driver_rows(
            s,
            select(
                r.series_id,
                r.first_step,
                r.last_step,
                r.last,
                r.count,
                r.nonfinite,
                r.low,
                r.low_step,
                r.high,
                r.high_step,
            )
            .where(r.series_id.in_(list(series_ids)), r.level == level)
            .order_by(r.series_id, r.bin),
        )
    )
    if level == 0 or not series_ids:
        return stored
    ids = ", ".join(str(int(sid)) for sid in series_ids)
    tail = _bins(_driver_rows(s, text(_PAST_MARK.format(ids=ids) + " ORDER BY r.series_id, r.bin")))
    return rollups.joined(stored, tail, LEVELS[level])


def _driver_rows(s: Session, statement: Executable) -> list[tuple[Any, ...]]:
    """The rows of ``statement`` as the database driver returns them, plain tuples: numpy
    reads those in C, while SQLAlchemy's rows (made one by one, read back one by one) cost a
    200-layer chart's read more than the database's fetch. The columns are numbers, which
    SQLAlchemy would hand over unchanged."""
    result = s.connection().execute(statement)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def _bins(rows: Sequence[tuple[Any, ...]]) -> Bins:
    """Rows of the ten bin columns (``_BIN_COLUMNS``' order) as bins: one float array, NULL
    as NaN, in C (steps and ids are exact as floats: ``MAX_STEP`` is 2**53 - 1)."""
    table = np.array(rows, dtype=np.float64).reshape(-1, 10)

    def ints(i: int) -> np.ndarray:
        return np.nan_to_num(table[:, i]).astype(np.int64)

    def floats(i: int) -> np.ndarray:
        return np.ascontiguousarray(table[:, i])

    return Bins(
        series=ints(0),
        first_step=ints(1),
        last_step=ints(2),
        last=floats(3),
        count=ints(4),
        nonfinite=ints(5),
        low=floats(6),
        low_step=ints(7),
        high=floats(8),
        high_step=ints(9),
    )
