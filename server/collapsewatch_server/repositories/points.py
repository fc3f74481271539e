"""Series and their points: one series per (probe, indicator) of a run, one point per sampled
step. Written at ingest; read whole, since a cursor, newest first, or by indicator."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import ScalarSelect, func, select
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.repositories.sql import insert
from collapsewatch_server.tables import Point, Probe, Series
from collapsewatch_web.api_schemas.runs import PointEvent, SeriesKey


class ProbePoints(NamedTuple):
    """Every stored point of one probe's series, in step order (NaN for a non-finite value)."""

    probe: str
    steps: list[int]
    values: list[float]


# ---------------------------------------------------------------------------------- write


def save_series(
    s: Session, run_id: str, keys: Iterable[tuple[int, str]]
) -> dict[tuple[int, str], int]:
    """(probe id, indicator) -> series id for ``keys`` and the run's other series, adding the
    series ``keys`` name that the run does not have yet."""
    existing = {
        (pid, ind): sid
        for pid, ind, sid in s.execute(
            select(Series.probe_id, Series.indicator, Series.id).where(Series.run_id == run_id)
        ).all()
    }
    new: dict[tuple[int, str], Series] = {}
    for key in keys:
        if key not in existing and key not in new:
            new[key] = Series(run_id=run_id, probe_id=key[0], indicator=key[1])
    if new:
        s.add_all(new.values())
        s.flush()
        existing.update({key: ser.id for key, ser in new.items()})
    return existing


def add(s: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Points as ``{"series_id", "step", "value"}`` (None for a non-finite value); a point a
    series already has at that step is kept, the new one dropped."""
    if rows:
        stmt = insert(s, Point).on_conflict_do_nothing(index_elements=["series_id", "step"])
        s.execute(stmt, rows)


# ----------------------------------------------------------------------------------- read


def list_series(s: Session, run_id: str) -> list[SeriesKey]:
    """The (indicator, probe) series of a run with their size and newest point, probes in
    model order."""
    agg = (
        select(
            Point.series_id,
            func.count(Point.id).label("n"),
            func.max(Point.step).label("last_step"),
        )
        .join(Series, Series.id == Point.series_id)
        .where(Series.run_id == run_id)
        .group_by(Point.series_id)
        .subquery()
    )
    rows = s.execute(
        select(Series.indicator, Probe.name, agg.c.n, agg.c.last_step, Point.value)
        .join(Probe, Probe.id == Series.probe_id)
        .outerjoin(agg, agg.c.series_id == Series.id)
        .outerjoin(Point, (Point.series_id == Series.id) & (Point.step == agg.c.last_step))
        .where(Series.run_id == run_id)
        .order_by(Series.indicator, Probe.order, Probe.id)
    ).all()
    return [
        SeriesKey(indicator=i, probe=p, points=n or 0, last_step=ls, last_value=v)
        for i, p, n, ls, v in rows
    ]


def of_series(
    s: Session, run_id: str, indicator: str, probe: str
) -> list[tuple[int, float | None]]:
    """(step, value) of one series in step order (NotFound when the run has no such series)."""
    series_id = s.scalar(
        select(Series.id)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id == run_id, Series.indicator == indicator, Probe.name == probe)
    )
    if series_id is None:
        raise errors.NotFound(
            errors.SERIES_NOT_FOUND.format(indicator=indicator, probe=probe, run_id=run_id)
        )
    rows = s.execute(
        select(Point.step, Point.value).where(Point.series_id == series_id).order_by(Point.step)
    ).all()
    return [(step, value) for step, value in rows]


def since(
    s: Session, run_id: uuid.UUID, cursor: int, limit: int = 5000
) -> tuple[list[PointEvent], int]:
    """Points of a run stored after ``cursor`` (a point id), and the new cursor."""
    rows = s.execute(
        select(Point.id, Series.indicator, Probe.name, Point.step, Point.value)
        .join(Series, Series.id == Point.series_id)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id == str(run_id), Point.id > cursor)
        .order_by(Point.id)
        .limit(limit)
    ).all()
    events = [PointEvent(indicator=i, probe=p, step=st, value=v) for _, i, p, st, v in rows]
    return events, (rows[-1][0] if rows else cursor)


def newest_id(s: Session) -> int:
    """The newest point id: a live page starts listening from here."""
    return s.scalar(select(func.max(Point.id))) or 0


def indicator_names(s: Session, run_id: str) -> list[str]:
    """The indicators a run has series of (any order; the catalogue orders them)."""
    return list(s.scalars(select(Series.indicator).where(Series.run_id == run_id).distinct()))


def first_or_last_step(last: bool) -> ScalarSelect[int]:
    """The first (last) step of the enclosing query's series: one index seek per series."""
    order = Point.step.desc() if last else Point.step
    return (
        select(Point.step)
        .where(Point.series_id == Series.id)
        .order_by(order)
        .limit(1)
        .correlate(Series)
        .scalar_subquery()
    )


def newest(s: Session, run_id: str, indicator: str | None = None) -> list[PointEvent]:
    """The newest point of every series of a run (or of one indicator), probes in model
    order: two index seeks per series, whatever the run's length."""
    last_value = (
        select(Point.value)
        .where(Point.series_id == Series.id)
        .order_by(Point.step.desc())
        .limit(1)
        .correlate(Series)
        .scalar_subquery()
    )
    query = (
        select(Series.indicator, Probe.name, first_or_last_step(True), last_value)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id == run_id)
        .order_by(Series.indicator, Probe.order, Probe.id)
    )
    if indicator is not None:
        query = query.where(Series.indicator == indicator)
    return [
        PointEvent(indicator=i, probe=p, step=st, value=v)
        for i, p, st, v in s.execute(query).all()
        if st is not None
    ]


def series_of(s: Session, run_id: str, indicator: str) -> list[tuple[int, str]]:
    """(series id, probe name) of one indicator of a run, probes in model order (NotFound
    when the run has none)."""
    rows = s.execute(
        select(Series.id, Probe.name)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id == run_id, Series.indicator == indicator)
        .order_by(Probe.order, Probe.id)
    ).all()
    if not rows:
        raise errors.NotFound(
            errors.INDICATOR_NOT_IN_RUN.format(indicator=indicator, run_id=run_id)
        )
    return [(sid, name) for sid, name in rows]


def of_indicator(s: Session, run_id: str, indicator: str) -> list[ProbePoints]:
    """Every point of every probe of one indicator, unreduced (a rule back-test judges each
    point), probes in model order; one query."""
    series = series_of(s, run_id, indicator)
    rows = s.execute(
        select(Point.series_id, Point.step, Point.value)
        .where(Point.series_id.in_([sid for sid, _ in series]))
        .order_by(Point.series_id, Point.step)
    ).all()
    out = {sid: ProbePoints(name, [], []) for sid, name in series}
    for sid, step, value in rows:
        out[sid].steps.append(step)
        out[sid].values.append(math.nan if value is None else value)
    return [out[sid] for sid, _ in series]


def probes_by_indicator(s: Session, run_ids: Sequence[uuid.UUID]) -> dict[str, list[str]]:
    """Indicator -> probes (model order, first seen first) over several runs: what a
    comparison can choose from."""
    rows = s.execute(
        select(Series.indicator, Probe.name)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id.in_([str(r) for r in run_ids]))
        .order_by(Probe.order, Probe.id)
    ).all()
    out: dict[str, list[str]] = {}
    for indicator, probe in rows:
        probes = out.setdefault(indicator, [])
        if probe not in probes:
            probes.append(probe)
    return out
