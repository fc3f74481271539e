"""The webhook outbox (``deliveries``): notifications, each carrying a group of alert events
(``delivery_events``) to one webhook; written in the transaction of the events they carry,
claimed by the senders of any server process, and the log of every attempt.

Grouping: an event joins its webhook's open delivery of the same group key (one not yet
claimed) or opens one, due after the group wait (:class:`GroupPolicy`). The first claim seals
it: its members and so its body never change again, and an event raised later opens the next.
On Postgres an event's transaction locks the open delivery it joins, so a claim sealing it
waits for the join to commit (and a join after the seal finds it sealed and opens another); on
SQLite the event's transaction holds the database's write lock before it looks.

The claim is what keeps several server processes from sending one delivery twice: a single
``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING id`` marks due rows
``delivering`` with a lease. On Postgres concurrent claimers skip each other's locked rows; on
SQLite the lock clause is dropped and the statement is atomic because writes serialise. A
sender that dies mid-send leaves its lease to expire, after which the row is due again.

A receiver that answers again gets its backlog at once: a delivered attempt makes the
webhook's other deliveries waiting for a retry due now, in order, spaced by the release rate.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, false, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from collapsewatch_server.repositories import silences
from collapsewatch_server.repositories.sql import inserted, is_postgres
from collapsewatch_server.tables import (
    AlertEvent,
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    Project,
    Run,
    Webhook,
    utcnow,
)
from collapsewatch_server.webhooks.grouping import GroupPolicy, group_key, labels_of
from collapsewatch_web.api_schemas.alerts import EventStatus
from collapsewatch_web.api_schemas.webhooks import (
    DeliveryAttemptPublic,
    DeliveryPublic,
    DeliveryStatus,
)

# bound as plain strings: the column is text on both backends
PENDING = DeliveryStatus.pending.value
DELIVERING = DeliveryStatus.delivering.value
SILENCED = DeliveryStatus.silenced.value
#: The group key of a test send (logged like a delivery, carrying no event).
TEST_KEY = "status=test"

#: A claimed row with everything sending it needs: (delivery, webhook, project name, its
#: events with their run names).
ClaimedRow = tuple[Delivery, Webhook, str, list[tuple[AlertEvent, str]]]


def enqueue(
    s: Session, events: Iterable[AlertEvent], policy: GroupPolicy, now: datetime | None = None
) -> int:
    """Put each event in a delivery of every enabled webhook of its project that wants its
    severity, in the caller's transaction: the events and their deliveries commit (or vanish)
    together. An event matching an active silence is marked with it instead. Returns how
    many (event, webhook) pairs were queued."""
    events = list(events)
    if not events:
        return 0  # the common case: nothing to lock, read or write
    now = now or utcnow()
    written = 0
    run_names: dict[str, str] = {}
    if not is_postgres(s):
        # SQLite's lock is per database and taken at a transaction's first write: take it
        # before reading which delivery is open, so no claim can seal it in between.
        s.execute(update(Delivery).where(false()).values(status=Delivery.status))
    for event in events:
        if event.run_id not in run_names:
            run_names[event.run_id] = s.scalar(select(Run.name).where(Run.id == event.run_id)) or ""
        silence = silences.silencing(s, event, run_names[event.run_id], now)
        if silence is not None:
            event.silence_id = silence.id
            continue
        hooks = s.scalars(
            select(Webhook).where(Webhook.project_id == event.project_id, Webhook.enabled)
        ).all()
        for hook in hooks:
            if event.severity not in (hook.severities or []):
                continue
            key = group_key(
                policy.by,
                status=event.status,
                run_id=event.run_id,
                indicator=event.indicator,
                rule=event.rule_name,
                probe=event.probe,
                severity=event.severity,
            )
            delivery = _open_delivery(s, hook.id, key) or _new_delivery(
                s, hook.id, key, policy, now
            )
            s.add(DeliveryEvent(delivery_id=delivery.id, event_id=event.id, webhook_id=hook.id))
            written += 1
    s.flush()
    return written


def _open_delivery(s: Session, webhook_id: int, key: str) -> Delivery | None:
    """The webhook's delivery of ``key`` that events may still join, locked till commit."""
    return s.scalar(
        select(Delivery)
        .where(
            Delivery.webhook_id == webhook_id,
            Delivery.group_key == key,
            Delivery.sealed_at.is_(None),
            Delivery.status == PENDING,
        )
        .order_by(Delivery.id)
        .limit(1)
        .with_for_update()
    )


def _new_delivery(
    s: Session, webhook_id: int, key: str, policy: GroupPolicy, now: datetime
) -> Delivery:
    last_sealed = s.scalar(
        select(func.max(Delivery.sealed_at)).where(
            Delivery.webhook_id == webhook_id, Delivery.group_key == key
        )
    )
    row = Delivery(
        uid=str(uuid.uuid4()),
        webhook_id=webhook_id,
        group_key=key,
        next_attempt_at=policy.first_due(now, last_sealed),
        created_at=now,
    )
    return inserted(s, row)


def add_test(s: Session, webhook_id: int, uid: uuid.UUID, now: datetime) -> Delivery:
    """A test send's delivery (already sealed, carrying no event), for the log; its attempt
    is recorded like any other."""
    row = Delivery(
        uid=str(uid),
        webhook_id=webhook_id,
        group_key=TEST_KEY,
        sealed_at=now,
        status=DELIVERING,
        next_attempt_at=now,
        lease_until=now,
        created_at=now,
    )
    return inserted(s, row)


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
    """Claim up to ``limit`` due deliveries, oldest due first, until ``lease_until``, sealing
    those claimed for the first time; atomic across processes."""
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
        .values(
            status=DELIVERING,
            lease_until=lease_until,
            sealed_at=func.coalesce(Delivery.sealed_at, now),
        )
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    ).all()
    if not ids:
        return []
    rows = s.execute(
        select(Delivery, Webhook, Project.name)
        .join(Webhook, Webhook.id == Delivery.webhook_id)
        .join(Project, Project.id == Webhook.project_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.next_attempt_at, Delivery.id)
    ).all()
    members: dict[int, list[tuple[AlertEvent, str]]] = {d.id: [] for d, _, _ in rows}
    for delivery_id, event, run_name in s.execute(
        select(DeliveryEvent.delivery_id, AlertEvent, Run.name)
        .join(AlertEvent, AlertEvent.id == DeliveryEvent.event_id)
        .join(Run, Run.id == AlertEvent.run_id)
        .where(DeliveryEvent.delivery_id.in_(ids))
    ).all():
        members[delivery_id].append((event, run_name))
    claimed = []
    for d, h, project in rows:
        if d.attempts == 0:  # not sent yet: a silence made during the group wait still applies
            members[d.id] = _unsilenced(s, d, members[d.id], now)
            if not members[d.id]:
                continue
        claimed.append((d, h, project, members[d.id]))
    return claimed


def _unsilenced(
    s: Session, delivery: Delivery, members: list[tuple[AlertEvent, str]], now: datetime
) -> list[tuple[AlertEvent, str]]:
    """The members no active silence matches; the others are marked with their silence and
    leave the delivery, which, left with none, is ``silenced`` (never sent)."""
    kept = []
    for event, run_name in members:
        silence = silences.silencing(s, event, run_name, now)
        if silence is None:
            kept.append((event, run_name))
            continue
        event.silence_id = silence.id
        s.execute(
            delete(DeliveryEvent).where(
                DeliveryEvent.delivery_id == delivery.id, DeliveryEvent.event_id == event.id
            )
        )
    if not kept:
        s.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id)
            .values(status=SILENCED, lease_until=None)
            .execution_options(synchronize_session=False)
        )
    return kept


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


def release_backlog(
    s: Session, webhook_id: int, now: datetime, per_second: float, keep: int
) -> int:
    """The receiver answered: its deliveries waiting for a retry (sealed, pending, not due
    yet) become due now, in the order they were created, ``1 / per_second`` apart. Returns
    how many were released. (``keep``: the delivery that just went out.)"""
    waiting = s.scalars(
        select(Delivery.id)
        .where(
            Delivery.webhook_id == webhook_id,
            Delivery.status == PENDING,
            Delivery.sealed_at.is_not(None),
            Delivery.next_attempt_at > now,
            Delivery.id != keep,
        )
        .order_by(Delivery.id)
    ).all()
    gap = 1.0 / per_second
    for i, delivery_id in enumerate(waiting):
        s.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == PENDING)
            .values(next_attempt_at=now + timedelta(seconds=i * gap))
            .execution_options(synchronize_session=False)
        )
    return len(waiting)


def next_due_at(s: Session) -> datetime | None:
    """When the next delivery becomes due (a pending retry or an expiring lease)."""
    pending = s.scalar(select(func.min(Delivery.next_attempt_at)).where(Delivery.status == PENDING))
    leased = s.scalar(select(func.min(Delivery.lease_until)).where(Delivery.status == DELIVERING))
    times = [t for t in (pending, leased) if t is not None]
    return min(times) if times else None


def log_of(s: Session, webhook_ids: Sequence[int], limit: int = 50) -> list[DeliveryPublic]:
    """Webhooks' deliveries (test sends too), newest first, each with the events it carries
    and its attempts (oldest first)."""
    rows: Sequence[Delivery] = s.scalars(
        select(Delivery)
        .where(Delivery.webhook_id.in_(list(webhook_ids)))
        .order_by(Delivery.id.desc())
        .limit(limit)
    ).all()
    ids = [d.id for d in rows]
    log: dict[int, list[DeliveryAttemptPublic]] = {i: [] for i in ids}
    for a in s.scalars(
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id.in_(ids))
        .order_by(DeliveryAttempt.id)
    ).all():
        log[a.delivery_id].append(
            DeliveryAttemptPublic(
                attempted_at=a.attempted_at,
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                error=a.error,
            )
        )
    events: dict[int, list[tuple[str, str, str]]] = {i: [] for i in ids}
    for delivery_id, event_id, status, severity in s.execute(
        select(DeliveryEvent.delivery_id, AlertEvent.id, AlertEvent.status, AlertEvent.severity)
        .join(AlertEvent, AlertEvent.id == DeliveryEvent.event_id)
        .where(DeliveryEvent.delivery_id.in_(ids))
        .order_by(AlertEvent.created_at, AlertEvent.id)
    ).all():
        events[delivery_id].append((event_id, status, severity))
    out = []
    for d in rows:
        labels = labels_of(d.group_key)
        members = events[d.id]
        test = d.group_key == TEST_KEY
        status = members[0][1] if members else labels.get("status", EventStatus.firing.value)
        out.append(
            DeliveryPublic(
                id=d.id,
                uid=uuid.UUID(d.uid),
                webhook_id=d.webhook_id,
                group=labels,
                event_ids=[uuid.UUID(e) for e, _, _ in members],
                event_status=EventStatus.firing if test else EventStatus(status),
                status=DeliveryStatus(d.status),
                attempts=d.attempts,
                next_attempt_at=d.next_attempt_at if d.status == PENDING else None,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                last_latency_ms=d.last_latency_ms,
                created_at=d.created_at,
                delivered_at=d.delivered_at,
                test=test,
                log=log[d.id],
            )
        )
    return out
