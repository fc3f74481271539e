"""Ingest: one batch of statistics from the SDK, from the validated batch to the webhook rows.

:func:`ingest_batch` reads top to bottom in one transaction: statistics -> windows ->
indicators -> run, probes, records and points -> the project's rules judge the new points ->
alert events and their deliveries in the outbox. Then, committed, it wakes this process's
webhook deliverer. Nothing is cached in the process: rules and states are read in the
transaction that stores the points, so any number of server processes can share a database.
"""

from __future__ import annotations

import math

from sqlalchemy.exc import IntegrityError

from collapsewatch.schemas import IngestBatch, IngestResult, RunAlert
from collapsewatch_server.alerts.evaluation import NewPoint, judge_points
from collapsewatch_server.codec import as_arrays, encode_stats
from collapsewatch_server.indicators import compute_indicators
from collapsewatch_server.repositories import (
    alert_events,
    alert_states,
    batches,
    outbox,
    points,
    probes,
    rules,
    runs,
    stat_records,
)
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.projects import project_for_writing
from collapsewatch_server.tables import utcnow
from collapsewatch_server.windows import BatchWindows, stored_needed
from collapsewatch_web.api_schemas.alerts import glob_matches

#: Firing alerts listed in an ingest answer at most (newest first).
MAX_FIRING = 50


def ingest_batch(ctx: ServiceContext, batch: IngestBatch) -> IngestResult:
    """Store one batch and act on it, atomically. A batch id already stored stores nothing
    and answers ``duplicate=True``."""
    try:
        result, queued = _ingest(ctx, batch)
    except IntegrityError:
        # A concurrent request stored the same batch (or created the same project or run)
        # first; our transaction rolled back whole. Re-check, then try once more.
        with ctx.db.read() as s:
            if batches.seen(s, batch.batch_id):
                return _duplicate(batch)
        result, queued = _ingest(ctx, batch)
    if queued:
        ctx.wake_deliverer()  # committed: the deliverer finds the new rows at once
    return result.model_copy(update={"firing": firing_on_run(ctx, batch)})


def firing_on_run(ctx: ServiceContext, batch: IngestBatch) -> list[RunAlert]:
    """The alerts firing on the batch's run, for the answer: the SDK acts on them (stops or
    checkpoints a run) without polling. Read after the batch is accepted."""
    with ctx.db.read() as s:
        rows = alert_states.firing(s, run_id=str(batch.run.run_id), limit=MAX_FIRING)
    return [
        RunAlert(
            rule_id=a.rule_id,
            rule=a.rule_name,
            indicator=a.indicator,
            probe=a.probe,
            severity=a.severity.value,
            since=a.since,
            step=a.last_step,
            value=a.last_value,
        )
        for a in rows
    ]


def _ingest(ctx: ServiceContext, batch: IngestBatch) -> tuple[IngestResult, int]:
    """The use case in one transaction; returns the answer and the deliveries it queued."""
    now = utcnow()
    with ctx.db.write() as s:
        if batches.seen(s, batch.batch_id):
            return _duplicate(batch), 0

        # 1. Statistics -> indicator values. Windowed indicators (dead units over the last
        #    few sampled steps) also read the probe's stored records, loaded in one query.
        arrays = [as_arrays(record.stats) for record in batch.records]
        before, count = stored_needed(batch)
        windows = BatchWindows(
            batch, arrays, stat_records.recent(s, batch.run.run_id, before, count)
        )
        values = [
            compute_indicators(record.kind, stats, windows.of(i))
            for i, (record, stats) in enumerate(zip(batch.records, arrays, strict=True))
        ]

        # 2. The run, its probes and series, the raw records and the points.
        project = project_for_writing(s, batch.run.project)
        run = runs.save_from_batch(s, batch, project, now)
        batches.claim(s, batch.batch_id, run.id)
        probe_ids = probes.save_from_batch(s, run.id, batch)
        records = [
            {
                "run_id": run.id,
                "probe_id": probe_ids[r.probe],
                "step": r.step,
                "stats": encode_stats(r.stats),
            }
            for r in batch.records
        ]
        stat_records.add(s, records)
        new_points = [
            NewPoint(probe_ids[record.probe], record.probe, name, record.step, value)
            for record, named in zip(batch.records, values, strict=True)
            for name, value in named.items()
        ]
        series_ids = points.save_series(s, run.id, ((p.probe_id, p.indicator) for p in new_points))
        points.add(
            s,
            [
                {
                    "series_id": series_ids[(p.probe_id, p.indicator)],
                    "step": p.step,
                    "value": p.value if math.isfinite(p.value) else None,
                }
                for p in new_points
            ],
        )
        batches.set_records(s, batch.batch_id, len(records))

        # 3. The project's enabled rules that watch this run judge the new points, in step
        #    order, from their stored states (locked: a concurrent batch of the run waits).
        indicators = {p.indicator for p in new_points}
        watching = {
            row.id: rules.spec_of(row)
            for row in (rules.enabled_for(s, project.id, indicators) if indicators else [])
            if glob_matches(run.name, row.run_glob)
        }
        queued = 0
        if watching:
            rows = alert_states.lock(s, run.id, list(watching))
            states = {key: alert_states.state_of(row) for key, row in rows.items()}
            judged = judge_points(watching, states, new_points, now)
            alert_states.save(s, run.id, rows, judged.states, now)

            # 4. Alert events, and their deliveries in the outbox, commit with the points.
            events = alert_events.add_raised(s, project.id, run, judged.raised, now)
            queued = outbox.enqueue(s, events)

    result = IngestResult(
        batch_id=batch.batch_id,
        run_id=batch.run.run_id,
        duplicate=False,
        records=len(records),
        points=len(new_points),
    )
    return result, queued


def _duplicate(batch: IngestBatch) -> IngestResult:
    return IngestResult(
        batch_id=batch.batch_id, run_id=batch.run.run_id, duplicate=True, records=0, points=0
    )
