"""The webhook outbox (``deliveries``): written in the transaction of the alert events it
carries, claimed by the senders of any server process, and the log of every attempt.

The claim is what keeps several server processes from sending one delivery twice: a single
``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING id`` marks due rows
``delivering`` with a lease. On Postgres concurrent claimers skip each other's locked rows; on
SQLite the lock clause is dropped and the statement is atomic because writes serialise. A
sender that dies mid-send leaves its lease to expire, after which the row is due again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from collapsewatch_server.tables import (
    AlertEvent,
    Delivery,
    DeliveryAttempt,
    Project,
    Run,
    Webhook,
    utcnow,
)
from collapsewatch_web.api_schemas.alerts import EventStatus
from collapsewatch_web.api_schemas.webhooks import (
    DeliveryAttemptPublic,
    DeliveryPublic,
    DeliveryStatus,
)

# bound as plain strings: the column is text on both backends
PENDING = DeliveryStatus.pending.value
DELIVERING = DeliveryStatus.delivering.value

#: A claimed row with everything sending it needs: (delivery, webhook, event, run name,
#: project name).
ClaimedRow = tuple[Delivery, Webhook, AlertEvent, str, str]


def enqueue(s: Session, events: Iterable[AlertEvent]) -> int:
    """One pending delivery, due now, per event and enabled webhook of the event's project
    that wants its severity, in the caller's transaction: the events and their deliveries
    commit (or vanish) together. Returns how many were written."""
    now = utcnow()
    written = 0
    for event in events:
        hooks = s.scalars(
            select(Webhook).where(Webhook.project_id == event.project_id, Webhook.enabled)
        ).all()
        for hook in hooks:
            if event.severity in (hook.severities or []):
                s.add(Delivery(webhook_id=hook.id, event_id=event.id, next_attempt_at=now))
                written += 1
    return written


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(Delivery.status == PENDING, Delivery.next_attempt_at <= now),
        and_(Delivery.status == DELIVERING, Delivery.lease_until < now),
    )


def any_due(s: Session, now: datetime) -> bool:
    """Whether a delivery is due: pending with ``next_attempt_at <= now``, or delivering with
    an expired lease (its sender died)."""
    return s.scalar(select(Delivery.id).where(_due(now)).limit(1)) is not None


def claim(s: Session, now: datetime, limit: int, lease_until: datetime) -> list[ClaimedRow]:
    """Claim up to ``limit`` due deliveries, oldest due first, until ``lease_until``; atomic
    across processes."""
    due_ids = (
        select(Delivery.id)
        .where(_due(now))
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = s.scalars(
        update(Delivery)
        .where(Delivery.id.in_(due_ids))
        .values(status=DELIVERING, lease_until=lease_until)
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not ids:
        return []
    rows = s.execute(
        select(Delivery, Webhook, AlertEvent, Run.name, Project.name)
        .join(Webhook, Webhook.id == Delivery.webhook_id)
        .join(AlertEvent, AlertEvent.id == Delivery.event_id)
        .join(Run, Run.id == AlertEvent.run_id)
        .join(Project, Project.id == AlertEvent.project_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.next_attempt_at, Delivery.id)
    ).all()
    return [(d, h, ev, run_name, project) for d, h, ev, run_name, project in rows]


def _claimed(delivery_id: int, lease_until: datetime) -> ColumnElement[bool]:
    return and_(
        Delivery.id == delivery_id,
        Delivery.status == DELIVERING,
        Delivery.lease_until == lease_until,
    )


def record_attempt(
    s: Session,
    delivery_id: int,
    lease_until: datetime,
    *,
    attempted_at: datetime,
    status: DeliveryStatus,
    status_code: int | None = None,
    latency_ms: float | None = None,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Log one attempt and move the delivery to ``status`` (pending with ``next_attempt_at``,
    delivered or failed). Returns False, changing only the log and the attempt count, when the
    claim was lost (the lease expired and another sender took the row) or the delivery is gone
    (its webhook was deleted meanwhile)."""
    error = error[:2000] if error else error
    if s.get(Delivery, delivery_id) is None:
        return False
    s.add(
        DeliveryAttempt(
            delivery_id=delivery_id,
            attempted_at=attempted_at,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
        )
    )
    result = s.execute(
        update(Delivery)
        .where(_claimed(delivery_id, lease_until))
        .values(
            status=status.value,
            attempts=Delivery.attempts + 1,
            lease_until=None,
            next_attempt_at=next_attempt_at or attempted_at,
            last_status_code=status_code,
            last_error=error,
            last_latency_ms=latency_ms,
            delivered_at=utcnow() if status == DeliveryStatus.delivered else None,
        )
        .execution_options(synchronize_session=False)
    )
    if cast("CursorResult[Any]", result).rowcount == 1:
        return True
    s.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id)
        .values(attempts=Delivery.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return False


def release(s: Session, claims: Iterable[tuple[int, datetime]]) -> None:
    """Give back claims (delivery id, lease) not attempted: due again at once, for anyone."""
    for delivery_id, lease_until in claims:
        s.execute(
            update(Delivery)
            .where(_claimed(delivery_id, lease_until))
            .values(status=PENDING, lease_until=None)
            .execution_options(synchronize_session=False)
        )


def next_due_at(s: Session) -> datetime | None:
    """When the next delivery becomes due (a pending retry or an expiring lease)."""
    pending = s.scalar(select(func.min(Delivery.next_attempt_at)).where(Delivery.status == PENDING))
    leased = s.scalar(select(func.min(Delivery.lease_until)).where(Delivery.status == DELIVERING))
    times = [t for t in (pending, leased) if t is not None]
    return min(times) if times else None


def log_of(s: Session, webhook_id: int, limit: int = 50) -> list[DeliveryPublic]:
    """A webhook's deliveries, newest first, each with its attempts (oldest first)."""
    rows = s.execute(
        select(Delivery, AlertEvent.status)
        .join(AlertEvent, AlertEvent.id == Delivery.event_id)
        .where(Delivery.webhook_id == webhook_id)
        .order_by(Delivery.id.desc())
        .limit(limit)
    ).all()
    log: dict[int, list[DeliveryAttemptPublic]] = {d.id: [] for d, _ in rows}
    attempts: Sequence[DeliveryAttempt] = s.scalars(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id.in_(list(log)))
        .order_by(DeliveryAttempt.id)
    ).all()
    for a in attempts:
        log[a.delivery_id].append(
            DeliveryAttemptPublic(
                attempted_at=a.attempted_at,
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                error=a.error,
            )
        )
    return [
        DeliveryPublic(
            id=d.id,
            webhook_id=d.webhook_id,
            event_id=uuid.UUID(d.event_id),
            event_status=EventStatus(status),
            status=DeliveryStatus(d.status),
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at if d.status == PENDING else None,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            last_latency_ms=d.last_latency_ms,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
            log=log[d.id],
        )
        for d, status in rows
    ]
