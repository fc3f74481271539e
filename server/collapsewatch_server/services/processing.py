"""Ingest, the processing half: one queued batch, from its statistics to the webhook rows.

:func:`process_next` claims the oldest batch of a run that no other processor holds (see
:mod:`collapsewatch_server.repositories.ingest_queue`) and reads top to bottom: statistics ->
windows -> indicators, computed outside any transaction; the probes and series the batch is
the first to name, created on their own; the rows of its raw records and of its points (only
steps their series lacks; a scalar column's points in one block per series, with no raw
record), series counters and rollups, built from reads (:mod:`.new_points`); then one
transaction that first takes the batch off the queue writes them, the project's rules judge
the new points, and alert events and their deliveries go to the outbox. Committed, it rings
the webhook deliverer. A batch whose processing fails goes back to the queue, and after
``ingest_max_attempts`` is set aside, so it never blocks the run's later batches.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from collapsewatch.schemas import IngestBatch, RunStatus
from collapsewatch_server.alerts.evaluation import NewPoint, judge_points
from collapsewatch_server.codec import as_arrays, encode_stats
from collapsewatch_server.indicators import compute_indicators
from collapsewatch_server.indicators.training import SCALAR_VALUE
from collapsewatch_server.repositories import (
    alert_events,
    alert_states,
    ingest_queue,
    outbox,
    points,
    probes,
    rules,
    runs,
    stat_records,
)
from collapsewatch_server.services import new_points
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.tables import Run, utcnow
from collapsewatch_server.webhooks.grouping import GroupPolicy
from collapsewatch_server.windows import BatchWindows, stored_needed
from collapsewatch_web.api_schemas.alerts import glob_matches

log = logging.getLogger("collapsewatch.ingest")

#: The longest one batch's processing waits, in all, for ingest requests being accepted: a
#: steady stream of them slows the processing down, and does not stop it.
GIVE_WAY_S = 2.0


@dataclass(frozen=True)
class Processed:
    """What became of one claim: the new points of each of its batches (in queue order) and
    the deliveries queued, or that it failed (back in the queue, or set aside) or was lost to
    another processor."""

    run_id: str
    #: batch id -> the points it added
    batches: dict[str, int]
    deliveries: int = 0
    failed: bool = False
    #: New points judged, once per rule judging each; the statuses of the events raised.
    evaluations: int = 0
    events: tuple[str, ...] = ()

    @property
    def points(self) -> int:
        """The points the claim's batches added, in all."""
        return sum(self.batches.values())


class _LeaseLost(Exception):
    """Our claim expired and another processor has the batch: leave it to them."""


def process_next(ctx: ServiceContext) -> Processed | None:
    """Claim and process the next batch (with the batches of its run queued behind it, see
    :func:`.ingest_queue.claim`); None when no batch can be claimed now."""
    now = utcnow()
    # Idle polls stay reads: an UPDATE matching nothing would still take SQLite's write lock.
    with ctx.db.read() as s:
        if not ingest_queue.any_claimable(s, now):
            return None
    lease = now + timedelta(seconds=ctx.settings.ingest_lease_s)
    with ctx.db.write() as s:
        claimed = ingest_queue.claim(s, now, lease, ctx.settings.ingest_claim_records)
    if not claimed:
        return None
    try:
        done = _process(ctx, claimed)
    except _LeaseLost:
        return _failed(claimed)
    except Exception as exc:
        if len(claimed) > 1:
            # One of them may be the culprit: each alone, so that only it is tried again.
            log.warning("processing %d batches at once failed (%r); one by one", len(claimed), exc)
            return _one_by_one(ctx, claimed)
        _release(ctx, claimed, 0, exc)
        return _failed(claimed)
    _count(ctx, done)
    if done.deliveries:
        ctx.wake_deliverer()  # committed: the deliverer finds the new rows at once
    return done


def _one_by_one(ctx: ServiceContext, claimed: list[ingest_queue.Claimed]) -> Processed:
    """Process a claim's batches one at a time, in order, until one fails: it goes back to the
    queue (or aside), and the batches behind it are released untried."""
    batches: dict[str, int] = {}
    deliveries = evaluations = 0
    events: tuple[str, ...] = ()
    for i, one in enumerate(claimed):
        try:
            done = _process(ctx, [one])
        except _LeaseLost:
            break
        except Exception as exc:
            _release(ctx, claimed, i, exc)
            break
        _count(ctx, done)
        batches.update(done.batches)
        deliveries += done.deliveries
        evaluations += done.evaluations
        events += done.events
    if deliveries:
        ctx.wake_deliverer()
    failed = len(batches) < len(claimed)
    return Processed(claimed[0].run_id, batches, deliveries, failed, evaluations, events)


def _release(
    ctx: ServiceContext, claimed: list[ingest_queue.Claimed], failed: int, exc: Exception
) -> None:
    """Batch ``failed`` of a claim could not be processed: back to the queue, or set aside
    after its last attempt; the claim's batches behind it go back untried."""
    culprit = claimed[failed]
    give_up = culprit.attempts >= ctx.settings.ingest_max_attempts
    log.error(
        "processing batch %s failed (attempt %d)%s",
        culprit.batch_id,
        culprit.attempts,
        "; set aside" if give_up else "",
        exc_info=exc,
    )
    now = utcnow()
    with ctx.db.write() as s:
        ingest_queue.release(s, culprit, repr(exc), now, give_up)
        for untried in claimed[failed + 1 :]:
            ingest_queue.release(s, untried, "", now, give_up=False, tried=False)
    ctx.metrics.batches_failed.inc()


def _failed(claimed: list[ingest_queue.Claimed]) -> Processed:
    return Processed(claimed[0].run_id, {}, failed=True)


def _count(ctx: ServiceContext, done: Processed) -> None:
    """What a committed claim added, on this process's counters."""
    ctx.metrics.points.inc(done.points)
    ctx.metrics.rule_evaluations.inc(done.evaluations)
    for status in done.events:
        ctx.metrics.alert_events.labels(status).inc()


def _batches(ctx: ServiceContext, claimed: list[ingest_queue.Claimed]) -> list[IngestBatch]:
    """The claimed batches, parsed: as this process accepted them, or from the queue."""
    return [
        ctx.parsed.take(c.batch_id) or IngestBatch.model_validate_json(gzip.decompress(c.payload))
        for c in claimed
    ]


def _as_one(batches: list[IngestBatch]) -> IngestBatch:
    """Consecutive batches of a run as one: their records in order, the last one's run
    information (with every probe any of them declares) and status. Processing it stores what
    processing them one after the other would."""
    if len(batches) == 1:
        return batches[0]
    last = batches[-1]
    declared = {p.name: p for b in batches for p in b.run.probes}
    run = last.run.model_copy(update={"probes": list(declared.values())})
    records = [r for b in batches for r in b.records]
    scalars = [c for b in batches for c in b.scalars]
    return last.model_copy(update={"run": run, "records": records, "scalars": scalars})


def _process(ctx: ServiceContext, claimed: list[ingest_queue.Claimed]) -> Processed:
    # Ingest answers first: where this holds no lock, it waits while requests are accepted.
    give_way = ctx.in_flight.courtesy(GIVE_WAY_S)
    give_way()
    parts = _batches(ctx, claimed)
    batch = _as_one(parts)

    # 1. Statistics -> indicator values, outside any transaction (CPU only). Windowed
    #    indicators (dead units over the last few sampled steps) also read the probe's stored
    #    records; the run's earlier batches are all stored (one batch of a run at a time).
    arrays = [as_arrays(record.stats) for record in batch.records]
    before, count = stored_needed(batch)
    with ctx.db.read() as s:
        stored = stat_records.recent(s, batch.run.run_id, before, count)
    windows = BatchWindows(batch, arrays, stored)
    values: list[dict[str, float]] = []
    encoded: list[bytes] = []
    for i, (record, stats) in enumerate(zip(batch.records, arrays, strict=True)):
        give_way()
        values.append(compute_indicators(record.kind, stats, windows.of(i)))
        encoded.append(encode_stats(stats))

    # 2. What the batch adds: probes and series it is the first to name are created on their
    #    own; its rows are built from reads (.new_points), so that the write transaction --
    #    on SQLite the database's one writer, which ingest answers wait for -- only writes.
    now = utcnow()
    with ctx.db.read() as s:
        run, _ = runs.get(s, batch.run.run_id)
        probe_ids = probes.ids_of_run(s, run.id)
    if probes.unknown(batch, probe_ids):
        with ctx.db.write() as s:
            probe_ids = probes.save_from_batch(s, run.id, batch)
    records = [
        (run.id, probe_ids[r.probe], r.step, blob)
        for r, blob in zip(batch.records, encoded, strict=True)
    ]
    keys = [
        (probe_ids[record.probe], name, record.step, value)
        for record, named in zip(batch.records, values, strict=True)
        for name, value in named.items()
    ]
    columns = _Columns.of(batch, probe_ids)
    with ctx.db.read() as s:
        series = points.series_of_run(s, run.id)
    named = {(pid, ind) for pid, ind, _, _ in keys} | columns.series_keys
    if any(key not in series for key in named):
        with ctx.db.write() as s:
            points.save_series(s, run.id, named)
            series = points.series_of_run(s, run.id)
    sids = np.concatenate(
        (
            np.fromiter((series[(p, i)][0] for p, i, _, _ in keys), np.int64, len(keys)),
            columns.series_ids(series),
        )
    )
    steps = np.concatenate(
        (np.fromiter((st for _, _, st, _ in keys), np.int64, len(keys)), columns.steps)
    )
    vals = np.concatenate(
        (np.fromiter((v for _, _, _, v in keys), np.float64, len(keys)), columns.values)
    )
    packed = np.arange(sids.size) >= len(keys)  # the columns' points go in blocks
    give_way()
    with ctx.db.read() as s:
        planned = new_points.plan(s, dict(series.values()), sids, steps, vals, packed)

    give_way()
    with ctx.db.write() as s:
        # First a write (SQLite takes its write lock here): the batch leaves the queue with
        # everything below, or stays whole.
        if not ingest_queue.finish(s, claimed):
            raise _LeaseLost
        stat_records.add(s, records, now)
        new_points.write(s, planned)

        # 3. The project's enabled rules that watch this run judge the new points, in step
        #    order, from their stored states (locked: a concurrent writer of the states waits).
        ended = batch.status in (RunStatus.finished, RunStatus.crashed)
        judged = _judge(s, run, probe_ids, keys, columns, planned.new, now, ctx.group_policy, ended)
    # the new points of each batch: each point's record (or column value), each one's batch
    of_record = np.repeat(np.arange(len(parts)), [len(part.records) for part in parts])
    of_column = np.repeat(np.arange(len(parts)), [len(part.scalars) for part in parts])
    of_point = np.concatenate(
        (
            np.repeat(of_record, [len(named) for named in values]),
            np.repeat(of_column, [len(c.steps) for c in batch.scalars]),
        )
    )
    added = np.bincount(of_point[planned.new], minlength=len(parts)).tolist()
    return Processed(
        claimed[0].run_id,
        {c.batch_id: int(n) for c, n in zip(claimed, added, strict=True)},
        judged.deliveries,
        evaluations=judged.evaluations,
        events=judged.events,
    )


@dataclass(frozen=True)
class _Columns:
    """A batch's scalar columns as arrays: each value a point of its probe's ``value``
    series (what a ``scalar`` record's indicator is), inf as NaN (stored as not finite)."""

    probe_ids: np.ndarray
    steps: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, batch: IngestBatch, probe_ids: dict[str, int]) -> _Columns:
        sizes = [len(c.steps) for c in batch.scalars]
        if not sizes:
            empty = np.empty(0, dtype=np.int64)
            return cls(empty, empty, np.empty(0, dtype=np.float64))
        values = np.concatenate([np.asarray(c.values, dtype=np.float64) for c in batch.scalars])
        return cls(
            np.repeat(np.array([probe_ids[c.probe] for c in batch.scalars], np.int64), sizes),
            np.concatenate([np.asarray(c.steps, dtype=np.int64) for c in batch.scalars]),
            np.where(np.isfinite(values), values, np.nan),
        )

    @property
    def series_keys(self) -> set[tuple[int, str]]:
        """(probe id, indicator) of the series the columns' points go to."""
        return {(int(pid), SCALAR_VALUE) for pid in np.unique(self.probe_ids).tolist()}

    def series_ids(self, series: dict[tuple[int, str], tuple[int, points.Counters]]) -> np.ndarray:
        """Each point's series id."""
        pids, inverse = np.unique(self.probe_ids, return_inverse=True)
        ids = np.array([series[(int(p), SCALAR_VALUE)][0] for p in pids.tolist()], np.int64)
        return ids[inverse] if ids.size else np.empty(0, dtype=np.int64)

    def new_points(self, new: np.ndarray, names: dict[int, str]) -> list[NewPoint]:
        """The columns' points stored (``new``: of the columns' points), as rules see them."""
        return [
            NewPoint(pid, names[pid], SCALAR_VALUE, step, value)
            for pid, step, value in zip(
                self.probe_ids[new].tolist(),
                self.steps[new].tolist(),
                self.values[new].tolist(),
                strict=True,
            )
        ]


@dataclass(frozen=True)
class _Judged:
    """What the rules did with a batch: deliveries queued, points judged, events raised."""

    deliveries: int = 0
    evaluations: int = 0
    events: tuple[str, ...] = ()


def _judge(
    s: Session,
    run: Run,
    probe_ids: dict[str, int],
    keys: list[tuple[int, str, int, float]],
    columns: _Columns,
    new: np.ndarray,
    now: datetime,
    policy: GroupPolicy,
    ended: bool,
) -> _Judged:
    """Rules over the batch's new points (``new``: of the records' points, then of the
    columns'), events and outbox rows. ``ended``: the batch is the run's last (its end state
    is judged)."""
    indicators = {ind for _, ind, _, _ in keys}
    if columns.steps.size:
        indicators.add(SCALAR_VALUE)
    watching = {
        row.id: rules.spec_of(row)
        for row in (rules.enabled_for(s, run.project_id, indicators) if indicators else [])
        if glob_matches(run.name, row.run_glob)
    }
    if not watching:
        return _Judged()
    watched = {spec.indicator for spec in watching.values()}
    names = {pid: name for name, pid in probe_ids.items()}
    new_points = [
        NewPoint(pid, names[pid], ind, step, value)
        for (pid, ind, step, value), fresh in zip(keys, new[: len(keys)].tolist(), strict=True)
        if fresh and ind in watched
    ]
    if SCALAR_VALUE in watched:
        new_points += columns.new_points(new[len(keys) :], names)
    rows = alert_states.lock(s, run.id, list(watching))
    states = {key: alert_states.state_of(row) for key, row in rows.items()}
    judged = judge_points(watching, states, new_points, now, final=ended)
    alert_states.save(s, run.id, rows, judged.states, now)
    events = alert_events.add_raised(s, run.project_id, run, judged.raised, now)
    evaluations = sum(
        1 for p in new_points for spec in watching.values() if spec.indicator == p.indicator
    )
    queued = outbox.enqueue(s, events, policy, now)
    return _Judged(queued, evaluations, tuple(e.status for e in events))
