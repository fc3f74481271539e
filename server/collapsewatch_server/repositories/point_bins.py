"""Points of one indicator of a run in common step bins, aggregated in SQL.

A run of 200 layers and 10k sampled steps holds 2M points per indicator: a chart that draws a
few hundred columns gets each bin's extremes from one GROUP BY over the (series_id, step)
index, never the points one by one.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import BigInteger, case, func, literal_column, select, union_all
from sqlalchemy.orm import Session

from collapsewatch_server.repositories.points import first_or_last_step, series_of
from collapsewatch_server.repositories.sql import UNION_PARTS
from collapsewatch_server.tables import Point, Series
from collapsewatch_web.api_schemas.charts import IndicatorBins, ProbeBins


def _no_bins(probe: str) -> ProbeBins:
    fields = ("index", "first_step", "last_step", "low", "high", "count", "nonfinite")
    return ProbeBins.model_validate({"probe": probe, **{f: [] for f in fields}})


def indicator_bins(s: Session, run_id: str, indicator: str, bins: int) -> IndicatorBins:
    """Every probe's points of ``indicator`` in at most ``bins`` common step bins, with each
    bin's extremes, in one aggregate query (per 400 probes): a spike or a collapse inside a bin
    is kept (its extreme), never averaged away. Bins of one step are the points themselves.
    NotFound when the run has no series of the indicator."""
    bins = max(1, bins)
    series = series_of(s, run_id, indicator)
    ids = [sid for sid, _ in series]
    lo, hi = s.execute(
        select(func.min(first_or_last_step(False)), func.max(first_or_last_step(True)))
        .select_from(Series)
        .where(Series.id.in_(ids))
    ).one()
    if lo is None:
        return IndicatorBins(
            indicator=indicator,
            start=0,
            width=1,
            bins=0,
            total=0,
            probes=[_no_bins(name) for _, name in series],
        )
    width = max(1, math.ceil((hi - lo + 1) / bins))
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
