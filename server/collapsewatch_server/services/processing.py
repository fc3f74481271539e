"""Ingest, the processing half: one queued batch, from its statistics to the webhook rows.

:func:`process_next` claims the oldest batch of a run that no other processor holds (see
:mod:`collapsewatch_server.repositories.ingest_queue`) and reads top to bottom: statistics ->
windows -> indicators, computed outside any transaction; then, in one transaction that first
takes the batch off the queue, probes, raw records, points (only steps their series lacks),
series counters and rollups; the project's rules judge the new points; alert events and their
deliveries go to the outbox. Committed, it rings the webhook deliverer. A batch whose
processing fails goes back to the queue, and after ``ingest_max_attempts`` is set aside, so it
never blocks the run's later batches.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from collapsewatch.schemas import IngestBatch, RunStatus
from collapsewatch_server import rollups
from collapsewatch_server.alerts.evaluation import NewPoint, judge_points
from collapsewatch_server.codec import as_arrays, encode_stats
from collapsewatch_server.indicators import compute_indicators
from collapsewatch_server.repositories import (
    alert_events,
    alert_states,
    ingest_queue,
    outbox,
    point_rollups,
    points,
    probes,
    rules,
    runs,
    stat_records,
)
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.tables import Run, utcnow
from collapsewatch_server.webhooks.grouping import GroupPolicy
from collapsewatch_server.windows import BatchWindows, stored_needed
from collapsewatch_web.api_schemas.alerts import glob_matches

log = logging.getLogger("collapsewatch.ingest")


@dataclass(frozen=True)
class Processed:
    """What became of one claimed batch: its new points and queued deliveries, or that it
    failed (back in the queue, or set aside) or was lost to another processor."""

    batch_id: str
    run_id: str
    points: int = 0
    deliveries: int = 0
    failed: bool = False
    #: New points judged, once per rule judging each; the statuses of the events raised.
    evaluations: int = 0
    events: tuple[str, ...] = ()


class _LeaseLost(Exception):
    """Our claim expired and another processor has the batch: leave it to them."""


def process_next(ctx: ServiceContext) -> Processed | None:
    """Claim and process the next batch; None when no batch can be claimed now."""
    now = utcnow()
    # Idle polls stay reads: an UPDATE matching nothing would still take SQLite's write lock.
    with ctx.db.read() as s:
        if not ingest_queue.any_claimable(s, now):
            return None
    with ctx.db.write() as s:
        claimed = ingest_queue.claim(s, now, now + timedelta(seconds=ctx.settings.ingest_lease_s))
    if claimed is None:
        return None
    try:
        done = _process(ctx, claimed)
    except _LeaseLost:
        return Processed(claimed.batch_id, claimed.run_id, failed=True)
    except Exception as exc:
        give_up = claimed.attempts >= ctx.settings.ingest_max_attempts
        log.exception(
            "processing batch %s failed (attempt %d)%s",
            claimed.batch_id,
            claimed.attempts,
            "; set aside" if give_up else "",
        )
        with ctx.db.write() as s:
            ingest_queue.release(s, claimed, repr(exc), utcnow(), give_up)
        ctx.metrics.batches_failed.inc()
        return Processed(claimed.batch_id, claimed.run_id, failed=True)
    _count(ctx, done)
    if done.deliveries:
        ctx.wake_deliverer()  # committed: the deliverer finds the new rows at once
    return done


def _count(ctx: ServiceContext, done: Processed) -> None:
    """What a committed batch added, on this process's counters."""
    ctx.metrics.points.inc(done.points)
    ctx.metrics.rule_evaluations.inc(done.evaluations)
    for status in done.events:
        ctx.metrics.alert_events.labels(status).inc()


def _process(ctx: ServiceContext, claimed: ingest_queue.Claimed) -> Processed:
    batch = ctx.parsed.take(claimed.batch_id) or IngestBatch.model_validate_json(
        gzip.decompress(claimed.payload)
    )

    # 1. Statistics -> indicator values, outside any transaction (CPU only). Windowed
    #    indicators (dead units over the last few sampled steps) also read the probe's stored
    #    records; the run's earlier batches are all stored (one batch of a run at a time).
    arrays = [as_arrays(record.stats) for record in batch.records]
    before, count = stored_needed(batch)
    with ctx.db.read() as s:
        stored = stat_records.recent(s, batch.run.run_id, before, count)
    windows = BatchWindows(batch, arrays, stored)
    values = [
        compute_indicators(record.kind, stats, windows.of(i))
        for i, (record, stats) in enumerate(zip(batch.records, arrays, strict=True))
    ]
    encoded = [encode_stats(record.stats) for record in batch.records]

    now = utcnow()
    with ctx.db.write() as s:
        # First a write (SQLite takes its write lock here): the batch leaves the queue with
        # everything below, or stays whole.
        if not ingest_queue.finish(s, claimed):
            raise _LeaseLost

        # 2. Probes, the raw records, the points their series lack, counters and rollups.
        run, _ = runs.get(s, batch.run.run_id)
        probe_ids = probes.save_from_batch(s, run.id, batch)
        stat_records.add(
            s,
            [
                (run.id, probe_ids[r.probe], r.step, blob)
                for r, blob in zip(batch.records, encoded, strict=True)
            ],
            now,
        )
        keys = [
            (probe_ids[record.probe], name, record.step, value)
            for record, named in zip(batch.records, values, strict=True)
            for name, value in named.items()
        ]
        series_ids = points.save_series(s, run.id, ((pid, ind) for pid, ind, _, _ in keys))
        sids = np.fromiter((series_ids[(p, i)] for p, i, _, _ in keys), np.int64, len(keys))
        steps = np.fromiter((st for _, _, st, _ in keys), np.int64, len(keys))
        vals = np.fromiter((v for _, _, _, v in keys), np.float64, len(keys))
        new = _store_points(s, sids, steps, vals)

        # 3. The project's enabled rules that watch this run judge the new points, in step
        #    order, from their stored states (locked: a concurrent writer of the states waits).
        ended = batch.status in (RunStatus.finished, RunStatus.crashed)
        judged = _judge(s, run, probe_ids, keys, new, now, ctx.group_policy, ended)
    return Processed(
        claimed.batch_id,
        claimed.run_id,
        int(new.sum()),
        judged.deliveries,
        evaluations=judged.evaluations,
        events=judged.events,
    )


@dataclass(frozen=True)
class _Judged:
    """What the rules did with a batch: deliveries queued, points judged, events raised."""

    deliveries: int = 0
    evaluations: int = 0
    events: tuple[str, ...] = ()


def _store_points(s: Session, sids: np.ndarray, steps: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Store the points whose series has no point at that step yet (the first of repeats in
    the batch), with the series' counters and rollups; returns the mask of the stored ones."""
    new = np.ones(sids.size, dtype=bool)
    if not sids.size:
        return new
    order = np.lexsort((steps, sids))  # stable: of repeats in the batch the first comes first
    sorted_sids, sorted_steps = sids[order], steps[order]
    repeat = (np.diff(sorted_sids) == 0) & (np.diff(sorted_steps) == 0)
    new[order[1:][repeat]] = False
    # A series only grows at its end, except when a batch is synced late: stored steps are
    # looked up only for series the batch reaches at or behind their last step.
    starts = np.flatnonzero(np.diff(sorted_sids, prepend=-1))
    first_new = dict(zip(sorted_sids[starts].tolist(), sorted_steps[starts].tolist(), strict=True))
    stored = points.counters(s, first_new)
    for sid, counted in stored.items():
        last = counted.last_step
        if last is not None and first_new[sid] <= last:
            mine = sids == sid
            known = points.known_steps(s, sid, first_new[sid], last)
            new &= ~(mine & np.isin(steps, np.fromiter(known, np.int64, len(known))))
    sids, steps, vals = sids[new], steps[new], vals[new]
    finite = np.isfinite(vals)
    points.add(
        s,
        [
            (sid, st, v if ok else None)
            for sid, st, v, ok in zip(
                sids.tolist(), steps.tolist(), vals.tolist(), finite.tolist(), strict=True
            )
        ],
    )
    bins = rollups.of_points(sids, steps, vals)
    whole = rollups.merge(bins, width=2**62)  # one bin per series: what the batch adds to it
    points.count_new(
        s,
        [
            (sid, n, first, last, value if np.isfinite(value) else None)
            for sid, n, first, last, value in zip(
                whole.series.tolist(),
                whole.count.tolist(),
                whole.first_step.tolist(),
                whole.last_step.tolist(),
                whole.last.tolist(),
                strict=True,
            )
        ],
    )
    # The finest rollup level takes every new point; the coarser ones only those behind their
    # series' mark, and catch up every ROLL_STEPS steps (see ``rollups``).
    series = whole.series.tolist()
    marks = np.fromiter((stored[sid].coarse_until for sid in series), np.int64, len(series))
    point_rollups.add(s, rollups.levels_at_ingest(bins, np.repeat(marks, whole.count)))
    before = np.fromiter(
        (-1 if stored[sid].last_step is None else stored[sid].last_step for sid in series),
        np.int64,
        len(series),
    )
    due = rollups.roll_due(marks, np.maximum(before, whole.last_step))
    point_rollups.roll(s, whole.series[due].tolist())
    return new


def _judge(
    s: Session,
    run: Run,
    probe_ids: dict[str, int],
    keys: list[tuple[int, str, int, float]],
    new: np.ndarray,
    now: datetime,
    policy: GroupPolicy,
    ended: bool,
) -> _Judged:
    """Rules over the batch's new points, events and outbox rows.
    ``ended``: the batch is the run's last (its end state is judged)."""
    indicators = {ind for _, ind, _, _ in keys}
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
        for (pid, ind, step, value), fresh in zip(keys, new.tolist(), strict=True)
        if fresh and ind in watched
    ]
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
