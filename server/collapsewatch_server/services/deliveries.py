"""Delivering webhooks: claim due deliveries from the outbox, send each, record the attempt.

The webhook worker runs these; any number of server processes may, on one database: a claim
is exclusive until its lease expires (see :mod:`collapsewatch_server.repositories.outbox`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from collapsewatch_server.repositories import outbox
from collapsewatch_server.services.alerts import event_public
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.webhooks import target_of
from collapsewatch_server.tables import utcnow
from collapsewatch_server.webhooks.deliverer import Attempt, Deliverer, DeliveryJob
from collapsewatch_server.webhooks.grouping import worst_first
from collapsewatch_server.webhooks.payloads import Notification
from collapsewatch_web.api_schemas.webhooks import DeliveryStatus

log = logging.getLogger("collapsewatch.webhooks")


def claim_due(
    ctx: ServiceContext, limit: int, lease_s: float, now: datetime | None = None
) -> list[DeliveryJob]:
    """Claim up to ``limit`` due deliveries for this process until ``now + lease_s``, with
    everything sending them needs. Oldest due first; atomic across processes."""
    now = now or utcnow()
    # Idle polls stay reads: an UPDATE matching nothing would still take SQLite's write lock.
    # (A separate transaction: upgrading a read one to a write can fail on SQLite.)
    with ctx.db.read() as s:
        if not outbox.any_due(s, now):
            return []
    lease_until = now + timedelta(seconds=lease_s)
    with ctx.db.write() as s:
        rows = outbox.claim(s, now, limit, lease_until)
    return [
        DeliveryJob(
            delivery_id=d.id,
            target=target_of(h, project),
            notification=Notification(
                id=uuid.UUID(d.uid),
                project=project,
                group_key=d.group_key,
                events=worst_first(
                    [event_public(ctx, ev, project, run_name) for ev, run_name in members]
                ),
                url=f"{ctx.settings.base_url}/alerts?project={project}",
            ),
            attempts=d.attempts,
            created_at=d.created_at,
            lease_until=lease_until,
        )
        for d, h, project, members in rows
    ]


async def deliver(ctx: ServiceContext, deliverer: Deliverer, job: DeliveryJob) -> DeliveryStatus:
    """Send one claimed delivery and record the attempt; returns the delivery's new status."""
    attempt = await deliverer.attempt(job)
    kept = await asyncio.to_thread(record_attempt, ctx, job, attempt)
    if not kept:
        log.warning("delivery %s: claim lost before its result was recorded", job.delivery_id)
    return attempt.status


def record_attempt(ctx: ServiceContext, job: DeliveryJob, attempt: Attempt) -> bool:
    """Log an attempt and move the delivery on. False (only the log and the attempt count
    change) when the claim was lost (its lease expired and another sender took the row) or
    the delivery is gone (its webhook was deleted meanwhile). A delivered attempt releases
    the receiver's backlog (its deliveries waiting for a retry are due now)."""
    with ctx.db.write() as s:
        if attempt.status == DeliveryStatus.delivered:
            released = outbox.release_backlog(
                s,
                job.target.id,
                attempt.attempted_at,
                ctx.settings.webhook_release_per_s,
                keep=job.delivery_id,
            )
            if released:
                log.info(
                    "webhook %s answers again: %d deliveries released", job.target.id, released
                )
        return outbox.record_attempt(
            s,
            job.delivery_id,
            job.lease_until,
            attempted_at=attempt.attempted_at,
            status=DeliveryStatus(attempt.status),
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
            next_attempt_at=attempt.next_attempt_at,
        )


def release_claims(ctx: ServiceContext, jobs: Sequence[DeliveryJob]) -> None:
    """Give back claims not attempted (shutdown): due again at once, for anyone."""
    with ctx.db.write() as s:
        outbox.release(s, [(job.delivery_id, job.lease_until) for job in jobs])


def next_due_at(ctx: ServiceContext) -> datetime | None:
    """When the next delivery becomes due (a pending retry or an expiring lease)."""
    with ctx.db.read() as s:
        return outbox.next_due_at(s)
