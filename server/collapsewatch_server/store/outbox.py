"""Writing to the webhook outbox, inside the transaction that creates an alert event."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from collapsewatch_server.models import AlertEvent, Delivery, Webhook, utcnow
from collapsewatch_server.store.base import ENQUEUED, StoreBase


class OutboxStore(StoreBase):
    def _enqueue_deliveries(self, s: Session, event: AlertEvent) -> int:
        """One pending delivery per enabled webhook of the event's project that wants its
        severity. Runs in the caller's transaction: the event and its deliveries commit (or
        vanish) together. Returns how many were written."""
        hooks = s.scalars(
            select(Webhook).where(Webhook.project_id == event.project_id, Webhook.enabled)
        ).all()
        now = utcnow()
        wanted = [h for h in hooks if event.severity in (h.severities or [])]
        for hook in wanted:
            s.add(Delivery(webhook_id=hook.id, event_id=event.id, next_attempt_at=now))
        if wanted:
            s.info[ENQUEUED] = True
        return len(wanted)
