"""Points of one indicator of a run in common step bins.

A run of 200 layers and 10k sampled steps holds 2M points per indicator: a chart that draws a
few hundred columns reads, per series, the stored rollup bins of the finest level no finer than
its columns (``collapsewatch_server.rollups``): at most one row per column. Small indicators
(``RAW_POINTS`` points in all) are binned from their points in one GROUP BY, at exactly the
columns asked for.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, case, func, literal_column, select, union_all
from sqlalchemy.orm import Session

from collapsewatch_server import rollups
from collapsewatch_server.repositories import point_rollups, points
from collapsewatch_server.repositories.points import series_rows_of, series_runs
from collapsewatch_server.repositories.sql import UNION_PARTS
from collapsewatch_server.tables import Point
from collapsewatch_web.api_schemas.charts import IndicatorBins, ProbeBins

#: Up to this many points in all, an indicator's chart is binned from its points.
RAW_POINTS = 100_000


def _no_bins(probe: str) -> ProbeBins:
    fields = ("index", "first_step", "last_step", "low", "high", "count", "nonfinite")
    return ProbeBins.model_validate({"probe": probe, **{f: [] for f in fields}})


def indicator_bins(
    s: Session, run_id: str, indicator: str, bins: int, raw_points: int = RAW_POINTS
) -> IndicatorBins:
    """Every probe's points of ``indicator`` in at most ``bins`` common step bins, with each
    bin's extremes, in one aggregate query (per 400 probes): a spike or a collapse inside a bin
    is kept (its extreme), never averaged away. Bins of one step are the points themselves.
    NotFound when the run has no series of the indicator."""
    bins = max(1, bins)
    listed = series_rows_of(s, run_id, indicator)
    series = [(row.id, name) for row, name in listed]
    ids = [sid for sid, _ in series]
    firsts = [row.first_step for row, _ in listed if row.first_step is not None]
    lasts = [row.last_step for row, _ in listed if row.last_step is not None]
    lo, hi = (min(firsts), max(lasts)) if firsts else (None, None)
    if lo is None or hi is None:
        return IndicatorBins(
            indicator=indicator,
            start=0,
            width=1,
            bins=0,
            total=0,
            probes=[_no_bins(name) for _, name in series],
        )
    width = max(1, math.ceil((hi - lo + 1) / bins))
    if sum(row.points for row, _ in listed) > raw_points:
        return _from_rollups(s, indicator, series, lo, hi, width)
    if points.with_blocks(s, ids):
        return _from_blocks(s, indicator, series, lo, hi, width)
    # literal integers, not bound parameters: Postgres must see the GROUP BY expression as the
    # selected one
    b = (
        (Point.step - literal_column(str(int(lo)), BigInteger))
        // literal_column(str(int(width)), BigInteger)
    ).label("b")
    columns = (
        Point.series_id,
        b,
        func.count(),
        func.min(Point.step),
        func.max(Point.step),
        func.min(Point.value),
        func.max(Point.value),
        func.sum(case((Point.value.is_(None), 1), else_=0)),
    )
    # One GROUP BY per series, glued with UNION ALL: a sort of one series' points each,
    # instead of one sort of all of them, reads 2M points 40% faster on SQLite.
    rows: list[Any] = []
    for start in range(0, len(ids), UNION_PARTS):
        parts = [
            select(*columns).where(Point.series_id == sid).group_by(Point.series_id, b)
            for sid in ids[start : start + UNION_PARTS]
        ]
        query = parts[0] if len(parts) == 1 else union_all(*parts)
        rows += s.execute(query).all()
    rows.sort(key=lambda r: (r[0], r[1]))
    per: dict[int, ProbeBins] = {sid: _no_bins(name) for sid, name in series}
    total = 0
    for sid, index, count, first, last, low, high, nonfinite in rows:
        pb = per[sid]
        pb.index.append(int(index))
        pb.first_step.append(int(first))
        pb.last_step.append(int(last))
        pb.low.append(low)
        pb.high.append(high)
        pb.count.append(int(count))
        pb.nonfinite.append(int(nonfinite or 0))
        total += int(count)
    return IndicatorBins(
        indicator=indicator,
        start=int(lo),
        width=width,
        bins=(int(hi) - int(lo)) // width + 1,
        total=total,
        probes=[per[sid] for sid, _ in series],
    )


def _from_rollups(
    s: Session, indicator: str, series: list[tuple[int, str]], lo: int, hi: int, width: int
) -> IndicatorBins:
    """The bins of the finest rollup level at least ``width`` wide, merged into columns of
    that level's width (so every stored bin falls in one column); past the coarsest level,
    columns of ``width`` steps, a multiple of it."""
    level = rollups.level_for(width)
    if level is None:
        level = len(rollups.LEVELS) - 1
        width = math.ceil(width / rollups.LEVELS[-1]) * rollups.LEVELS[-1]
    else:
        width = rollups.LEVELS[level]
    start = lo // width * width
    stored = point_rollups.read(s, [sid for sid, _ in series], level)
    return _columns(indicator, series, rollups.merge(stored, width, origin=start), start, hi, width)


def _from_blocks(
    s: Session, indicator: str, series: list[tuple[int, str]], lo: int, hi: int, width: int
) -> IndicatorBins:
    """The bins of a small indicator some of whose points are stored in blocks (which an SQL
    aggregate cannot see into): its points read, unpacked and binned here."""
    sids, steps, values = points.of_series_ids(s, [sid for sid, _ in series])
    merged = rollups.merge(rollups.of_points(sids, steps, values), width, origin=lo)
    return _columns(indicator, series, merged, lo, hi, width)


def _columns(
    indicator: str,
    series: list[tuple[int, str]],
    merged: rollups.Bins,
    start: int,
    hi: int,
    width: int,
) -> IndicatorBins:
    """Merged bins (sorted by series and step, one per column) as the chart's columns."""
    per: dict[int, ProbeBins] = {sid: _no_bins(name) for sid, name in series}
    # column by column (numpy -> lists once), then each series' run of rows: a loop over the
    # rows cost 80 ms for a 200-layer chart
    index = ((merged.first_step - start) // width).tolist()
    first, last = merged.first_step.tolist(), merged.last_step.tolist()
    low, high = _nullable(merged.low), _nullable(merged.high)
    count, nonfinite = merged.count.tolist(), merged.nonfinite.tolist()
    for sid, a, b in series_runs(merged.series):
        pb = per[sid]
        pb.index.extend(index[a:b])
        pb.first_step.extend(first[a:b])
        pb.last_step.extend(last[a:b])
        pb.low.extend(low[a:b])
        pb.high.extend(high[a:b])
        pb.count.extend(count[a:b])
        pb.nonfinite.extend(nonfinite[a:b])
    return IndicatorBins(
        indicator=indicator,
        start=start,
        width=width,
        bins=(hi - start) // width + 1,
        total=int(merged.count.sum()),
        probes=[per[sid] for sid, _ in series],
    )


def _nullable(values: np.ndarray) -> list[float | None]:
    """The floats as a list, ``None`` where NaN (an empty bin)."""
    out = values.astype(object)
    out[np.isnan(values)] = None
    return list(out.tolist())
