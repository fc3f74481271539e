"""Ingest, the processing half: one queued batch, from its statistics to the webhook rows.

:func:`process_next` claims the oldest batch of a run that no other processor holds (see
:mod:`collapsewatch_server.repositories.ingest_queue`) and reads top to bottom: statistics ->
windows -> indicators, computed outside any transaction; the probes and series the batch is
the first to name, created on their own; the rows of its raw records and of its points (only
steps their series lacks), series counters and rollups, built from reads
(:mod:`.new_points`); then one transaction that first takes the batch off the queue writes
them, the project's rules judge the new points, and alert events and their deliveries go to
the outbox. Committed, it rings the webhook deliverer. A batch whose
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
from collapsewatch_server.alerts.evaluation import NewPoint, judge_points
from collapsewatch_server.codec import as_arrays, encode_stats
from collapsewatch_server.indicators import compute_indicators
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
    # Ingest answers first: where this holds no lock, it waits while requests are accepted.
    give_way = ctx.in_flight.courtesy(GIVE_WAY_S)
    give_way()
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
    values: list[dict[str, float]] = []
    encoded: list[bytes] = []
    for i, (record, stats) in enumerate(zip(batch.records, arrays, strict=True)):
        give_way()
        values.append(compute_indicators(record.kind, stats, windows.of(i)))
        encoded.append(encode_stats(record.stats))

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
    with ctx.db.read() as s:
        series = points.series_of_run(s, run.id)
    if any((pid, ind) not in series for pid, ind, _, _ in keys):
        with ctx.db.write() as s:
            points.save_series(s, run.id, ((pid, ind) for pid, ind, _, _ in keys))
            series = points.series_of_run(s, run.id)
    sids = np.fromiter((series[(p, i)][0] for p, i, _, _ in keys), np.int64, len(keys))
    steps = np.fromiter((st for _, _, st, _ in keys), np.int64, len(keys))
    vals = np.fromiter((v for _, _, _, v in keys), np.float64, len(keys))
    give_way()
    with ctx.db.read() as s:
        planned = new_points.plan(s, dict(series.values()), sids, steps, vals)

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
        judged = _judge(s, run, probe_ids, keys, planned.new, now, ctx.group_policy, ended)
    return Processed(
        claimed.batch_id,
        claimed.run_id,
        int(planned.new.sum()),
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
