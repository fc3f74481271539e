"""Series and their points: one series per (probe, indicator) of a run, one point per sampled
step. Written at ingest; read whole, since a cursor, newest first, or by indicator."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.repositories.sql import bulk_insert, execute_many
from collapsewatch_server.tables import Point, Probe, Series
from collapsewatch_web.api_schemas.runs import PointEvent, SeriesKey

#: Ids per ``IN (...)`` list.
_IN_CHUNK = 500


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


def add(s: Session, rows: Sequence[tuple[int, int, float | None]]) -> None:
    """Points as ``(series_id, step, value)`` (None for a non-finite value) by the backend's
    bulk path. The caller has left out steps its series already has (:func:`known_steps`)."""
    bulk_insert(s, "points", ("series_id", "step", "value"), rows)


class Counters(NamedTuple):
    """What is stored of a series: its first and last step (None before its first point), and
    the mark its coarse rollup levels are complete up to (``rollups``)."""

    first_step: int | None
    last_step: int | None
    coarse_until: int


def series_of_run(s: Session, run_id: str) -> dict[tuple[int, str], tuple[int, Counters]]:
    """(probe id, indicator) -> (series id, its :class:`Counters`) of every series of a run."""
    rows = s.execute(
        select(
            Series.probe_id,
            Series.indicator,
            Series.id,
            Series.first_step,
            Series.last_step,
            Series.coarse_until,
        ).where(Series.run_id == run_id)
    ).all()
    return {
        (pid, ind): (sid, Counters(first, last, mark)) for pid, ind, sid, first, last, mark in rows
    }


def known_steps(s: Session, series_id: int, first: int, last: int) -> set[int]:
    """The steps in [first, last] a series has points at (one index range scan)."""
    return set(
        s.scalars(
            select(Point.step).where(
                Point.series_id == series_id, Point.step >= first, Point.step <= last
            )
        )
    )


def count_new(s: Session, updates: Sequence[tuple[int, int, int, int, float | None]]) -> None:
    """Add new points to their series' counters: ``(series_id, how many, first step, last
    step, value at the last step)`` per series, from points not stored before."""
    execute_many(
        s,
        "UPDATE series SET points = points + ?, "
        "first_step = CASE WHEN first_step IS NULL OR first_step > ? THEN ? ELSE first_step END, "
        "last_value = CASE WHEN last_step IS NULL OR last_step < ? THEN ? ELSE last_value END, "
        "last_step = CASE WHEN last_step IS NULL OR last_step < ? THEN ? ELSE last_step END "
        "WHERE id = ?",
        [(n, f, f, la, v, la, la, sid) for sid, n, f, la, v in updates],
    )


# ----------------------------------------------------------------------------------- read


def list_series(s: Session, run_id: str) -> list[SeriesKey]:
    """The (indicator, probe) series of a run with their size and newest point, probes in
    model order: from the counters kept at ingest, one row per series."""
    rows = s.execute(
        select(Series.indicator, Probe.name, Series.points, Series.last_step, Series.last_value)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id == run_id)
        .order_by(Series.indicator, Probe.order, Probe.id)
    ).all()
    return [
        SeriesKey(indicator=i, probe=p, points=n, last_step=ls, last_value=v)
        for i, p, n, ls, v in rows
    ]


def series_ids(s: Session, run_id: str) -> list[tuple[int, str, str]]:
    """(series id, probe name, indicator) of every series of a run, indicator then model
    order: what an export walks through."""
    rows = s.execute(
        select(Series.id, Probe.name, Series.indicator)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id == run_id)
        .order_by(Series.indicator, Probe.order, Probe.id)
    ).all()
    return [(sid, probe, indicator) for sid, probe, indicator in rows]


def find_series(s: Session, run_id: str, indicator: str, probe: str) -> Series:
    """One series of a run with its counters (NotFound when the run has no such series)."""
    found = s.scalar(
        select(Series)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id == run_id, Series.indicator == indicator, Probe.name == probe)
    )
    if found is None:
        raise errors.NotFound(
            errors.SERIES_NOT_FOUND.format(indicator=indicator, probe=probe, run_id=run_id)
        )
    return found


def of_series(s: Session, series_id: int) -> list[tuple[int, float | None]]:
    """(step, value) of one series in step order."""
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


def newest(s: Session, run_id: str, indicator: str | None = None) -> list[PointEvent]:
    """The newest point of every series of a run (or of one indicator), probes in model
    order: the series' counters, whatever the run's length."""
    query = (
        select(Series.indicator, Probe.name, Series.last_step, Series.last_value)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id == run_id, Series.last_step.is_not(None))
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
    return [(row.id, name) for row, name in series_rows_of(s, run_id, indicator)]


def series_rows_of(s: Session, run_id: str, indicator: str) -> list[tuple[Series, str]]:
    """The series of one indicator of a run with their counters, and their probe names,
    probes in model order (NotFound when the run has none)."""
    rows = s.execute(
        select(Series, Probe.name)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id == run_id, Series.indicator == indicator)
        .order_by(Probe.order, Probe.id)
    ).all()
    if not rows:
        raise errors.NotFound(
            errors.INDICATOR_NOT_IN_RUN.format(indicator=indicator, run_id=run_id)
        )
    return [(row, name) for row, name in rows]


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
