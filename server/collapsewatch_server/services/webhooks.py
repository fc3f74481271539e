"""Webhooks of a project: create (a project that does not exist yet is created, with its
default rules), read, update, delete, send a signed test event, and read the delivery log.
Target URLs pass the SSRF guard on create and on update, and again at every connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import cast

from collapsewatch_server import errors
from collapsewatch_server.repositories import outbox, projects, webhooks
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.projects import project_for_writing
from collapsewatch_server.tables import Webhook, utcnow
from collapsewatch_server.webhooks import email, signing, ssrf
from collapsewatch_server.webhooks.deliverer import WebhookTarget, send_test, test_result
from collapsewatch_web.api_schemas.alerts import Severity
from collapsewatch_web.api_schemas.webhooks import (
    DeliveryPublic,
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookFormat,
    WebhookPublic,
    WebhookTestResult,
    WebhookUpdate,
)


def public(row: Webhook, project: str) -> WebhookPublic:
    """A webhook as the API shows it: its secret only as a hint."""
    return WebhookPublic(
        id=row.id,
        project=project,
        name=row.name,
        url=row.url,
        format=cast(WebhookFormat, row.format),
        severities=[Severity(sev) for sev in row.severities],
        enabled=row.enabled,
        secret_hint=signing.secret_hint(row.secret),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def target_of(row: Webhook, project: str) -> WebhookTarget:
    """What sending to a webhook needs, its secret included."""
    return WebhookTarget(
        row.id,
        project,
        row.url,
        cast(WebhookFormat, row.format),
        row.secret,
        row.enabled,
        row.routing_key,
    )


def _check_url(ctx: ServiceContext, url: str, fmt: str) -> None:
    """Refuse targets the server must not reach (or, for email, addresses it cannot use), as
    a 422 on ``url`` (blocking DNS)."""
    try:
        if fmt == "email":
            email.recipients(url)
        else:
            ssrf.check_url(url, allow_private=ctx.settings.webhook_allow_private)
    except (ssrf.UnsafeTarget, ValueError) as exc:
        raise errors.Invalid(str(exc), loc=("body", "url")) from None


def _check_receiver(fmt: str, routing_key: str | None) -> None:
    if fmt == "pagerduty" and not routing_key:
        raise errors.Invalid(errors.ROUTING_KEY_NEEDED, loc=("body", "routing_key"))


def create_webhook(ctx: ServiceContext, project: str, data: WebhookCreate) -> WebhookCreated:
    """A new webhook of ``project`` (created, with its default rules, when new). The secret is
    generated unless given, and returned only here."""
    _check_url(ctx, data.url, data.format)
    _check_receiver(data.format, data.routing_key)
    secret = data.secret or signing.new_secret()
    try:
        signing.secret_key(secret)
    except signing.InvalidSecret as exc:
        raise errors.Invalid(str(exc), loc=("body", "secret")) from None
    with ctx.db.write() as s:
        proj = project_for_writing(s, project)
        row = webhooks.add(s, proj.id, data, secret)
        return WebhookCreated(**public(row, proj.name).model_dump(), secret=secret)


def list_webhooks(ctx: ServiceContext, project: str) -> list[WebhookPublic]:
    """The webhooks of an existing project, oldest first."""
    with ctx.db.read() as s:
        proj = projects.get(s, project)
        return [public(r, proj.name) for r in webhooks.of_project(s, proj.id)]


def get_webhook(ctx: ServiceContext, project: str, webhook_id: int) -> WebhookPublic:
    with ctx.db.read() as s:
        return public(webhooks.get(s, projects.get(s, project), webhook_id), project)


def update_webhook(
    ctx: ServiceContext, project: str, webhook_id: int, data: WebhookUpdate
) -> WebhookPublic:
    """Replace the given fields; the secret cannot be changed (delete, create)."""
    changes = data.model_dump(exclude_unset=True)
    if changes.get("severities") is not None:
        changes["severities"] = [str(sev) for sev in changes["severities"]]
    with ctx.db.read() as s:
        current = webhooks.get(s, projects.get(s, project), webhook_id)
        fmt = data.format or current.format
        url = data.url or current.url
        routing_key = data.routing_key or current.routing_key
    if data.url is not None or data.format is not None:
        _check_url(ctx, url, fmt)
    _check_receiver(fmt, routing_key)
    with ctx.db.write() as s:
        row = webhooks.get(s, projects.get(s, project), webhook_id)
        webhooks.update(row, changes, utcnow())
        return public(row, project)


def delete_webhook(ctx: ServiceContext, project: str, webhook_id: int) -> None:
    """Delete a webhook with its pending deliveries and its log."""
    with ctx.db.write() as s:
        webhooks.delete_with_deliveries(s, webhooks.get(s, projects.get(s, project), webhook_id))


async def send_test_event(ctx: ServiceContext, project: str, webhook_id: int) -> WebhookTestResult:
    """Send a signed test notification now (even to a disabled webhook), log it in the
    webhook's deliveries like any other, and report what the receiver answered."""

    def target() -> WebhookTarget:
        with ctx.db.read() as s:
            return target_of(webhooks.get(s, projects.get(s, project), webhook_id), project)

    hook = await asyncio.to_thread(target)
    attempted_at = utcnow()
    payload, result = await send_test(hook, ctx.settings)

    def log() -> None:
        with ctx.db.write() as s:
            row = outbox.add_test(s, hook.id, payload.id, attempted_at)
            outbox.record_attempt(
                s,
                row.id,
                attempted_at,
                attempted_at=attempted_at,
                status=DeliveryStatus.delivered if result.ok else DeliveryStatus.failed,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                error=result.error,
            )

    await asyncio.to_thread(log)
    return test_result(result)


def list_deliveries(
    ctx: ServiceContext, project: str, webhook_id: int, limit: int = 50
) -> list[DeliveryPublic]:
    """A webhook's deliveries, newest first, each with its attempts (oldest first)."""
    with ctx.db.read() as s:
        hook = webhooks.get(s, projects.get(s, project), webhook_id)
        return outbox.log_of(s, [hook.id], limit)


def project_notifications(
    ctx: ServiceContext, project: str, limit: int = 20
) -> list[DeliveryPublic]:
    """The newest notifications to any webhook of an existing project (test sends left out)."""
    with ctx.db.read() as s:
        ids = [h.id for h in webhooks.of_project(s, projects.get(s, project).id)]
        return [d for d in outbox.log_of(s, ids, limit) if not d.test]


def unheard(ctx: ServiceContext, firing_projects: Iterable[str]) -> list[str]:
    """Those of ``firing_projects`` (projects with alerts firing) that no enabled webhook
    hears: their alerts reach nobody."""
    with ctx.db.read() as s:
        heard = webhooks.projects_with_receivers(s)
    return sorted(set(firing_projects) - heard)
