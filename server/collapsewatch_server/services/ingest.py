"""Ingest, the accepting half: one validated batch from the SDK, stored durably in one short
transaction, answered at once.

:func:`accept_batch` reads top to bottom: a batch id seen before is a duplicate (same content)
or a conflict (other content); a deep queue is answered 429 with Retry-After (the SDK waits and
spools, it never drops); otherwise the project and the run are saved (the run's status and last
step show at once), the batch id with its content hash, and the batch itself in the ingest
queue. Indicators, points, rules and webhooks follow in :mod:`.processing`, run by the
processor of every server process (:mod:`collapsewatch_server.processor`), which this rings.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from collapsewatch.schemas import IngestBatch, IngestResult, RunAlert
from collapsewatch_server import errors
from collapsewatch_server.repositories import alert_states, batches, ingest_queue, runs
from collapsewatch_server.services import processing
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.projects import project_for_writing
from collapsewatch_server.tables import utcnow

#: Firing alerts listed in an ingest answer at most (newest first).
MAX_FIRING = 50


@dataclass(frozen=True)
class Accepted:
    """The answer, and whether the batch waits in the queue alone (nothing ahead of it)."""

    result: IngestResult
    alone: bool = False


def content_hash(batch: IngestBatch) -> str:
    """SHA-256 of what the batch says (everything but when it was sent)."""
    return hashlib.sha256(batch.model_dump_json(exclude={"sent_at"}).encode()).hexdigest()


def accept_batch(
    ctx: ServiceContext, batch: IngestBatch, body: bytes, gzipped: bytes | None = None
) -> Accepted:
    """Store one batch (``body``: the JSON it was validated from; ``gzipped``: that JSON as
    one gzip member, when the client sent it so) in the ingest queue, atomically, or say why
    not (Conflict, Busy). A batch id already stored with the same content stores nothing and
    answers ``duplicate=True``."""
    digest = content_hash(batch)
    try:
        accepted = _accept(ctx, batch, body, gzipped, digest)
    except IntegrityError:
        # A concurrent request stored the same batch (or created the same project or run)
        # first; our transaction rolled back whole. Try once more: it answers as a re-send.
        accepted = _accept(ctx, batch, body, gzipped, digest)
    if not accepted.result.duplicate:
        ctx.wake_processor()
    return accepted


def firing_on_run(s: Session, run_id: str) -> list[RunAlert]:
    """The alerts firing on a run when its batch is accepted, for the answer: the SDK acts on
    them (stops or checkpoints a run) without polling. Those the batch raises are judged in the
    background and listed in a later answer."""
    if not alert_states.any_firing(s, run_id):
        return []
    rows = alert_states.firing(s, run_id=run_id, limit=MAX_FIRING)
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


def _accept(
    ctx: ServiceContext, batch: IngestBatch, body: bytes, gzipped: bytes | None, digest: str
) -> Accepted:
    with ctx.db.read() as s:
        # read with the rest: one transaction less per request (each a round trip or more)
        firing = firing_on_run(s, str(batch.run.run_id))
        stored = batches.content_hash_of(s, batch.batch_id)
        if stored is not None:
            duplicate = _duplicate(batch, stored, digest)
            return Accepted(duplicate.model_copy(update={"firing": firing}))
        # whether any batch waits (exact, cheap: the answer may wait for this one's points
        # when none does), and how deep the queue is (read at most every half second)
        waiting = ingest_queue.any_waiting(s)
        records = ctx.queue_depth.get(lambda: ingest_queue.depth(s))[1] if waiting else 0
    if waiting and records + batch.load > ctx.settings.ingest_queue_max_records:
        retry = ctx.settings.ingest_retry_after_s
        raise errors.Busy(errors.INGEST_BUSY.format(records=records, retry_after=retry), retry)

    # the JSON as sent (the SDK's NaN and inf included), compressed: the processor reads it
    payload = gzipped or gzip.compress(body, compresslevel=1)
    now = utcnow()
    # kept before the commit: the processor may claim the batch as soon as it is committed
    ctx.parsed.put(batch, len(body))
    try:
        # urgent: the client waits for this transaction, the processor's can wait for it
        with ctx.db.write(urgent=True) as s:
            project = project_for_writing(s, batch.run.project)
            run = runs.save_from_batch(s, batch, project, now)
            batches.claim(s, batch.batch_id, run.id, digest, batch.size)
            # the queue counts what processing will cost (a column's values weigh little)
            ingest_queue.add(s, str(batch.batch_id), run.id, batch.load, payload, now)
    except Exception:
        ctx.parsed.take(str(batch.batch_id))
        raise
    ctx.queue_depth.add(batch.load)
    result = IngestResult(
        batch_id=batch.batch_id,
        run_id=batch.run.run_id,
        duplicate=False,
        records=batch.size,
        points=0,
        queued=True,
        firing=firing,
    )
    return Accepted(result, alone=not waiting)


def _duplicate(batch: IngestBatch, stored: str, digest: str) -> IngestResult:
    """A re-sent batch (same id and content: nothing to do), or a conflict. A batch stored
    before hashes were kept (``stored == ""``) is taken to be the same."""
    if stored and stored != digest:
        raise errors.Conflict(errors.BATCH_ID_REUSED.format(batch_id=batch.batch_id))
    return IngestResult(
        batch_id=batch.batch_id, run_id=batch.run.run_id, duplicate=True, records=0, points=0
    )


def ingest_batch(ctx: ServiceContext, body: bytes) -> IngestResult:
    """Validate and accept a batch, then process the queue until it is empty, in the caller's
    thread: for the command line and tests that have no processor running."""
    batch = IngestBatch.model_validate_json(body)
    accepted = accept_batch(ctx, batch, body)
    if accepted.result.duplicate:
        return accepted.result
    points = 0
    while (done := processing.process_next(ctx)) is not None:
        points = done.batches.get(str(batch.batch_id), points)
    return accepted.result.model_copy(update={"points": points, "queued": False})
