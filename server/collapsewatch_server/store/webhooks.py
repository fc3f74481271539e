"""Webhooks and their deliveries: CRUD, the outbox claim, the attempt log.

The claim is what keeps several server processes from sending one delivery twice: a single
``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING id`` marks due rows
``delivering`` with a lease. On Postgres concurrent claimers skip each other's locked rows; on
SQLite the lock clause is dropped and the statement is atomic because writes serialise. A
sender that dies mid-send leaves its lease to expire, after which the row is due again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from collapsewatch_server import errors
from collapsewatch_server.models import (
    AlertEvent,
    Delivery,
    DeliveryAttempt,
    Project,
    Run,
    Webhook,
    utcnow,
)
from collapsewatch_server.store.base import StoreBase
from collapsewatch_server.webhooks import signing
from collapsewatch_web.api_schemas.alerts import AlertEventPublic
from collapsewatch_web.api_schemas.webhooks import (
    DeliveryAttemptPublic,
    DeliveryPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookFormat,
    WebhookPublic,
    WebhookUpdate,
)

PENDING, DELIVERING, DELIVERED, FAILED = "pending", "delivering", "delivered", "failed"


@dataclass(frozen=True)
class WebhookTarget:
    """What sending to a webhook needs (the secret included: never hand this to a client)."""

    id: int
    project: str
    url: str
    format: WebhookFormat
    secret: str
    enabled: bool


@dataclass(frozen=True)
class DeliveryJob:
    """A claimed delivery with everything needed to send it, and the claim that owns it."""

    delivery_id: int
    target: WebhookTarget
    event: AlertEventPublic
    attempts: int  # made before this one
    created_at: datetime
    #: The lease written by the claim; a result is applied only while it is still there.
    lease_until: datetime


class WebhookStore(StoreBase):
    """Webhooks of a project and the outbox of their deliveries."""

    # ------------------------------------------------------------------------------ CRUD

    @staticmethod
    def _public(row: Webhook, project: str) -> WebhookPublic:
        return WebhookPublic(
            id=row.id,
            project=project,
            name=row.name,
            url=row.url,
            format=row.format,
            severities=row.severities,
            enabled=row.enabled,
            secret_hint=signing.secret_hint(row.secret),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def create_webhook(self, project: str, data: WebhookCreate) -> WebhookCreated:
        """A new webhook of ``project`` (created, with its default rules, when new). The URL
        must have passed the SSRF check; the secret is generated unless given, and returned
        only here."""
        secret = data.secret or signing.new_secret()
        try:
            signing.secret_key(secret)
        except signing.InvalidSecret as exc:
            raise errors.Invalid(str(exc), loc=("body", "secret")) from None
        with self._sessions.begin() as s:
            proj = self._project(s, project)
            row = Webhook(
                project_id=proj.id,
                name=data.name,
                url=data.url,
                format=data.format,
                severities=[sev.value for sev in data.severities],
                secret=secret,
                enabled=data.enabled,
            )
            s.add(row)
            s.flush()
            return WebhookCreated(**self._public(row, proj.name).model_dump(), secret=secret)

    def _webhook(self, s: Session, project: str, webhook_id: int) -> Webhook:
        proj = self._existing_project(s, project)
        row = s.scalar(
            select(Webhook).where(Webhook.id == webhook_id, Webhook.project_id == proj.id)
        )
        if row is None:
            raise errors.NotFound(
                errors.WEBHOOK_NOT_FOUND.format(webhook_id=webhook_id, project=project)
            )
        return row

    def list_webhooks(self, project: str) -> list[WebhookPublic]:
        """The webhooks of an existing project, oldest first."""
        with self._sessions() as s:
            proj = self._existing_project(s, project)
            rows = s.scalars(
                select(Webhook).where(Webhook.project_id == proj.id).order_by(Webhook.id)
            ).all()
            return [self._public(r, proj.name) for r in rows]

    def get_webhook(self, project: str, webhook_id: int) -> WebhookPublic:
        with self._sessions() as s:
            return self._public(self._webhook(s, project, webhook_id), project)

    def webhook_target(self, project: str, webhook_id: int) -> WebhookTarget:
        """URL, format and secret of a webhook, for a test send."""
        with self._sessions() as s:
            row = self._webhook(s, project, webhook_id)
            return WebhookTarget(row.id, project, row.url, row.format, row.secret, row.enabled)

    def update_webhook(self, project: str, webhook_id: int, data: WebhookUpdate) -> WebhookPublic:
        """Replace the given fields (a new URL must have passed the SSRF check)."""
        changes = data.model_dump(exclude_unset=True)
        if "severities" in changes and changes["severities"] is not None:
            changes["severities"] = [str(sev) for sev in changes["severities"]]
        with self._sessions.begin() as s:
            row = self._webhook(s, project, webhook_id)
            for field, value in changes.items():
                if value is not None:  # an explicit null leaves the field as it is
                    setattr(row, field, value)
            row.updated_at = utcnow()
            return self._public(row, project)

    def delete_webhook(self, project: str, webhook_id: int) -> None:
        """Delete a webhook with its deliveries and their log."""
        with self._sessions.begin() as s:
            row = self._webhook(s, project, webhook_id)
            # Explicit rather than relying on ON DELETE CASCADE alone, which SQLite honours
            # only with its foreign_keys pragma on.
            ids = select(Delivery.id).where(Delivery.webhook_id == row.id)
            s.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(ids)))
            s.execute(delete(Delivery).where(Delivery.webhook_id == row.id))
            s.delete(row)

    # ------------------------------------------------------------------------ delivery log

    def list_deliveries(
        self, project: str, webhook_id: int, limit: int = 50
    ) -> list[DeliveryPublic]:
        """A webhook's deliveries, newest first, each with its attempts (oldest first)."""
        with self._sessions() as s:
            hook = self._webhook(s, project, webhook_id)
            rows = s.execute(
                select(Delivery, AlertEvent.status)
                .join(AlertEvent, AlertEvent.id == Delivery.event_id)
                .where(Delivery.webhook_id == hook.id)
                .order_by(Delivery.id.desc())
                .limit(limit)
            ).all()
            log: dict[int, list[DeliveryAttemptPublic]] = {d.id: [] for d, _ in rows}
            attempts = s.scalars(
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
                event_status=status,
                status=d.status,
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

    # ------------------------------------------------------------------------------ outbox

    @staticmethod
    def _due(now: datetime) -> ColumnElement[bool]:
        return or_(
            and_(Delivery.status == PENDING, Delivery.next_attempt_at <= now),
            and_(Delivery.status == DELIVERING, Delivery.lease_until < now),
        )

    def claim_due_deliveries(
        self, limit: int, lease_s: float, now: datetime | None = None
    ) -> list[DeliveryJob]:
        """Claim up to ``limit`` due deliveries for this process until ``now + lease_s``.

        Due: pending with ``next_attempt_at <= now``, or delivering with an expired lease (its
        sender died). Atomic across processes; oldest due first.
        """
        now = now or utcnow()
        lease_until = now + timedelta(seconds=lease_s)
        due_ids = (
            select(Delivery.id)
            .where(self._due(now))
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        # Idle polls stay reads: an UPDATE matching nothing would still take SQLite's write
        # lock. (A separate transaction: upgrading a read one to a write can fail on SQLite.)
        with self._sessions() as s:
            if s.scalar(select(Delivery.id).where(self._due(now)).limit(1)) is None:
                return []
        with self._sessions.begin() as s:
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
        return [
            DeliveryJob(
                delivery_id=d.id,
                target=WebhookTarget(h.id, project, h.url, h.format, h.secret, h.enabled),
                event=self._event_public(ev, project, run_name),
                attempts=d.attempts,
                created_at=d.created_at,
                lease_until=lease_until,
            )
            for d, h, ev, run_name, project in rows
        ]

    def _claimed(self, job: DeliveryJob) -> ColumnElement[bool]:
        return and_(
            Delivery.id == job.delivery_id,
            Delivery.status == DELIVERING,
            Delivery.lease_until == job.lease_until,
        )

    def record_attempt(
        self,
        job: DeliveryJob,
        *,
        attempted_at: datetime,
        status: str,
        status_code: int | None = None,
        latency_ms: float | None = None,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> bool:
        """Log one attempt and move the delivery to ``status`` (pending with
        ``next_attempt_at``, delivered or failed). Returns False, changing only the log and the
        attempt count, when the claim was lost (the lease expired and another sender took the
        row) or the delivery is gone (its webhook was deleted meanwhile)."""
        error = error[:2000] if error else error
        with self._sessions.begin() as s:
            if s.get(Delivery, job.delivery_id) is None:
                return False
            s.add(
                DeliveryAttempt(
                    delivery_id=job.delivery_id,
                    attempted_at=attempted_at,
                    status_code=status_code,
                    latency_ms=latency_ms,
                    error=error,
                )
            )
            result = s.execute(
                update(Delivery)
                .where(self._claimed(job))
                .values(
                    status=status,
                    attempts=Delivery.attempts + 1,
                    lease_until=None,
                    next_attempt_at=next_attempt_at or attempted_at,
                    last_status_code=status_code,
                    last_error=error,
                    last_latency_ms=latency_ms,
                    delivered_at=utcnow() if status == DELIVERED else None,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                return True
            s.execute(
                update(Delivery)
                .where(Delivery.id == job.delivery_id)
                .values(attempts=Delivery.attempts + 1)
                .execution_options(synchronize_session=False)
            )
            return False

    def release_claims(self, jobs: list[DeliveryJob]) -> None:
        """Give back claims not attempted (shutdown): due again at once, for anyone."""
        with self._sessions.begin() as s:
            for job in jobs:
                s.execute(
                    update(Delivery)
                    .where(self._claimed(job))
                    .values(status=PENDING, lease_until=None)
                    .execution_options(synchronize_session=False)
                )

    def next_due_at(self) -> datetime | None:
        """When the next delivery becomes due (a pending retry or an expiring lease)."""
        with self._sessions() as s:
            pending = s.scalar(
                select(func.min(Delivery.next_attempt_at)).where(Delivery.status == PENDING)
            )
            leased = s.scalar(
                select(func.min(Delivery.lease_until)).where(Delivery.status == DELIVERING)
            )
        times = [t for t in (pending, leased) if t is not None]
        return min(times) if times else None
