"""Webhooks of a project: the receivers of its alert events (the secret is kept: it signs)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from collapsewatch_server import errors
from collapsewatch_server.repositories.sql import inserted, owned_row
from collapsewatch_server.tables import Delivery, DeliveryAttempt, DeliveryEvent, Project, Webhook
from collapsewatch_web.api_schemas.webhooks import WebhookCreate


def add(s: Session, project_id: int, data: WebhookCreate, secret: str) -> Webhook:
    """A new webhook row, flushed (it has its id)."""
    row = Webhook(
        project_id=project_id,
        name=data.name,
        url=data.url,
        format=data.format,
        severities=[sev.value for sev in data.severities],
        secret=secret,
        routing_key=data.routing_key,
        enabled=data.enabled,
    )
    return inserted(s, row)


def get(s: Session, project: Project, webhook_id: int) -> Webhook:
    """A webhook of the project (NotFound otherwise)."""
    missing = errors.WEBHOOK_NOT_FOUND.format(webhook_id=webhook_id, project=project.name)
    return owned_row(s, Webhook, project, webhook_id, missing)


def of_project(s: Session, project_id: int) -> list[Webhook]:
    """The webhooks of a project, oldest first."""
    return list(
        s.scalars(select(Webhook).where(Webhook.project_id == project_id).order_by(Webhook.id))
    )


def update(row: Webhook, changes: Mapping[str, Any], now: datetime) -> None:
    """Set the given columns; an explicit None leaves a column as it is."""
    for column, value in changes.items():
        if value is not None:
            setattr(row, column, value)
    row.updated_at = now


def delete_with_deliveries(s: Session, row: Webhook) -> None:
    """Delete a webhook with its deliveries and their log."""
    # Explicit rather than relying on ON DELETE CASCADE alone, which SQLite honours only with
    # its foreign_keys pragma on.
    ids = select(Delivery.id).where(Delivery.webhook_id == row.id)
    s.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(ids)))
    s.execute(delete(DeliveryEvent).where(DeliveryEvent.webhook_id == row.id))
    s.execute(delete(Delivery).where(Delivery.webhook_id == row.id))
    s.delete(row)


def projects_with_receivers(s: Session) -> set[str]:
    """Names of the projects with at least one enabled webhook."""
    return set(
        s.scalars(
            select(Project.name)
            .join(Webhook, Webhook.project_id == Project.id)
            .where(Webhook.enabled)
        )
    )
