"""Series and their points: one series per (probe, indicator) of a run, one point per sampled
step. Written at ingest; read whole, since a cursor, newest first, or by indicator.

A row of ``points`` is one point, or a block of them (a scalar column stored as it came:
``packed``, see ``codec.pack_points``); every read here gives points, blocks unpacked."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from collapsewatch_server import codec, errors
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


class Block(NamedTuple):
    """One row holding a series' points at several steps: its first step and value (None when
    not finite), its last step, and every step and value packed (``codec.pack_points``)."""

    series_id: int
    step: int
    value: float | None
    last_step: int
    packed: bytes


def add_blocks(s: Session, blocks: Sequence[Block]) -> None:
    """Blocks of points by the backend's bulk path; as for :func:`add`, of steps their series
    does not have yet."""
    bulk_insert(s, "points", ("series_id", "step", "value", "last_step", "packed"), blocks)


def _unpacked(
    rows: Iterable[tuple[int, int, float | None, bytes | None]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of (series id, step, value, packed) as three arrays (series, steps, values; NaN
    for a non-finite value), blocks unpacked, sorted by series and step (a block reaches
    past points stored after it when a batch was synced late)."""
    sids: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    values: list[np.ndarray] = []
    single_sid: list[int] = []
    single_step: list[int] = []
    single_value: list[float] = []

    def flush() -> None:
        if single_sid:
            sids.append(np.array(single_sid, dtype=np.int64))
            steps.append(np.array(single_step, dtype=np.int64))
            values.append(np.array(single_value, dtype=np.float64))
            single_sid.clear()
            single_step.clear()
            single_value.clear()

    for sid, step, value, packed in rows:
        if packed is None:
            single_sid.append(sid)
            single_step.append(step)
            single_value.append(math.nan if value is None else value)
            continue
        flush()
        st, vals = codec.unpack_points(packed)
        sids.append(np.full(st.size, sid, dtype=np.int64))
        steps.append(st)
        values.append(np.where(np.isfinite(vals), vals, math.nan))
    flush()
    if not sids:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float64)
    all_sids, all_steps, all_values = (np.concatenate(a) for a in (sids, steps, values))
    if len(sids) > 1:
        order = np.lexsort((all_steps, all_sids))
        all_sids, all_steps, all_values = all_sids[order], all_steps[order], all_values[order]
    return all_sids, all_steps, all_values


def with_blocks(s: Session, series_ids: Sequence[int]) -> set[int]:
    """Which of these series have points stored in blocks (a partial index's few rows)."""
    found: set[int] = set()
    for start in range(0, len(series_ids), _IN_CHUNK):
        chunk = list(series_ids[start : start + _IN_CHUNK])
        found.update(
            s.scalars(
                select(Point.series_id)
                .where(Point.series_id.in_(chunk), Point.packed.is_not(None))
                .distinct()
            )
        )
    return found


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
    """The steps in [first, last] a series has points at: an index range scan, and the
    series' blocks that start before the range and reach into it (the partial index of
    blocks; not a scan of the series from its start)."""
    rows = s.execute(
        select(Point.series_id, Point.step, Point.value, Point.packed).where(
            Point.series_id == series_id,
            or_(
                Point.step.between(first, last),
                and_(Point.packed.is_not(None), Point.step < first, Point.last_step >= first),
            ),
        )
    ).all()
    _, steps, _ = _unpacked(rows)
    return set(steps[(steps >= first) & (steps <= last)].tolist())


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


def of_series(s: Session, series_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The steps and values (NaN for a non-finite value) of one series in step order."""
    rows = s.execute(
        select(Point.series_id, Point.step, Point.value, Point.packed)
        .where(Point.series_id == series_id)
        .order_by(Point.step)
    ).all()
    _, steps, values = _unpacked(rows)
    return steps, values


def since(
    s: Session, run_id: uuid.UUID, cursor: int, limit: int = 5000
) -> tuple[list[PointEvent], int]:
    """Points of a run stored after ``cursor`` (a point id), and the new cursor: ``limit``
    rows, a block's points all in one answer."""
    rows = s.execute(
        select(Point.id, Series.indicator, Probe.name, Point.step, Point.value, Point.packed)
        .join(Series, Series.id == Point.series_id)
        .join(Probe, Probe.id == Series.probe_id)
        .where(Series.run_id == str(run_id), Point.id > cursor)
        .order_by(Point.id)
        .limit(limit)
    ).all()
    events = []
    for _, indicator, probe, step, value, packed in rows:
        if packed is None:
            events.append(PointEvent(indicator=indicator, probe=probe, step=step, value=value))
            continue
        steps, values = codec.unpack_points(packed)
        events += [
            PointEvent(
                indicator=indicator, probe=probe, step=st, value=v if math.isfinite(v) else None
            )
            for st, v in zip(steps.tolist(), values.tolist(), strict=True)
        ]
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
    sids, steps, values = of_series_ids(s, [sid for sid, _ in series])
    out = {sid: ProbePoints(name, [], []) for sid, name in series}
    for sid, a, b in series_runs(sids):
        out[sid].steps.extend(steps[a:b].tolist())
        out[sid].values.extend(values[a:b].tolist())
    return [out[sid] for sid, _ in series]


def of_series_ids(
    s: Session, series_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every point of these series as (series ids, steps, values; NaN for a non-finite
    value), sorted by series and step; one query per 500 series."""
    rows: list[tuple[int, int, float | None, bytes | None]] = []
    for start in range(0, len(series_ids), _IN_CHUNK):
        rows += s.execute(
            select(Point.series_id, Point.step, Point.value, Point.packed)
            .where(Point.series_id.in_(list(series_ids[start : start + _IN_CHUNK])))
            .order_by(Point.series_id, Point.step)
        ).all()
    return _unpacked(rows)


def series_runs(ids: np.ndarray) -> list[tuple[int, int, int]]:
    """(series id, start, end) of each run of equal ids, in order: the rows of one series
    between ``start`` and ``end``."""
    if not len(ids):
        return []
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]).tolist()
    ends = [*starts[1:], len(ids)]
    return [(int(ids[a]), a, b) for a, b in zip(starts, ends, strict=True)]


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
