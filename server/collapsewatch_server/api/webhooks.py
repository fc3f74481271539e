"""Webhooks of a project: CRUD, a signed test send, the delivery log.

Creating a webhook for a project that does not exist yet creates the project (with its default
rules), as creating an ingest token does: a user sets up alerting before the first run. Every
other route answers 404 for an unknown project. Target URLs pass the SSRF guard on create and
on update (422 on ``url``, nothing stored) and again at every connection.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from collapsewatch_server import errors
from collapsewatch_server.api.deps import ReadAuth, SettingsDep, StoreDep
from collapsewatch_server.config import Settings
from collapsewatch_server.webhooks import ssrf
from collapsewatch_server.webhooks.deliverer import send_test
from collapsewatch_web.api_schemas.webhooks import (
    DeliveryPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookPublic,
    WebhookTestResult,
    WebhookUpdate,
)

router = APIRouter(
    prefix="/api/v1/projects/{project}/webhooks", tags=["webhooks"], dependencies=[ReadAuth]
)

#: A project created here must be one runs can ingest into (``collapsewatch.schemas.Name``).
NewProject = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
]

_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "unknown project or webhook"},
    422: {"description": "invalid field, or a URL the SSRF guard refuses, saying which field"},
}


def _check_url(url: str, settings: Settings) -> None:
    """Refuse targets the server must not reach (blocking DNS: called from sync routes)."""
    try:
        ssrf.check_url(url, allow_private=settings.webhook_allow_private)
    except ssrf.UnsafeTarget as exc:
        raise errors.Invalid(str(exc), loc=("body", "url")) from None


@router.get("", response_model=list[WebhookPublic], responses=_ERRORS)
def list_webhooks(project: str, store: StoreDep) -> list[WebhookPublic]:
    return store.list_webhooks(project)


@router.post("", status_code=201, response_model=WebhookCreated, responses=_ERRORS)
def create_webhook(
    project: NewProject, webhook: WebhookCreate, store: StoreDep, settings: SettingsDep
) -> WebhookCreated:
    """A new webhook; the answer carries its secret, which is never shown again."""
    _check_url(webhook.url, settings)
    return store.create_webhook(project, webhook)


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=_ERRORS)
def get_webhook(project: str, webhook_id: int, store: StoreDep) -> WebhookPublic:
    return store.get_webhook(project, webhook_id)


@router.put("/{webhook_id}", response_model=WebhookPublic, responses=_ERRORS)
def update_webhook(
    project: str, webhook_id: int, update: WebhookUpdate, store: StoreDep, settings: SettingsDep
) -> WebhookPublic:
    """Given fields replace the stored ones; the secret cannot be changed (delete, create)."""
    if update.url is not None:
        _check_url(update.url, settings)
    return store.update_webhook(project, webhook_id, update)


@router.delete("/{webhook_id}", status_code=204, responses=_ERRORS)
def delete_webhook(project: str, webhook_id: int, store: StoreDep) -> Response:
    """Delete a webhook with its pending deliveries and its log."""
    store.delete_webhook(project, webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/test", response_model=WebhookTestResult, responses=_ERRORS)
async def send_test_event(
    project: str, webhook_id: int, store: StoreDep, settings: SettingsDep
) -> WebhookTestResult:
    """Send a signed ``test`` event now (even to a disabled webhook) and report what the
    receiver answered: status, latency and the start of its body, or the error."""
    target = await run_in_threadpool(store.webhook_target, project, webhook_id)
    return await send_test(target, settings)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryPublic], responses=_ERRORS)
def list_deliveries(
    project: str,
    webhook_id: int,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[DeliveryPublic]:
    """The delivery log, newest first: status, attempts and what each attempt got."""
    return store.list_deliveries(project, webhook_id, limit)
