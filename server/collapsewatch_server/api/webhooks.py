"""Webhooks of a project: CRUD, a signed test send, the delivery log.

Creating a webhook for a project that does not exist yet creates the project (with its default
rules), as creating an ingest token does: a user sets up alerting before the first run. Every
other route answers 404 for an unknown project. Target URLs pass the SSRF guard on create and
on update (422 on ``url``, nothing stored) and again at every connection.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from collapsewatch_server.api.deps import ContextDep, ReadAuth, RowId
from collapsewatch_server.services import webhooks
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


@router.get("", response_model=list[WebhookPublic], responses=_ERRORS)
def list_webhooks(project: str, ctx: ContextDep) -> list[WebhookPublic]:
    return webhooks.list_webhooks(ctx, project)


@router.post("", status_code=201, response_model=WebhookCreated, responses=_ERRORS)
def create_webhook(project: NewProject, webhook: WebhookCreate, ctx: ContextDep) -> WebhookCreated:
    """A new webhook; the answer carries its secret, which is never shown again."""
    return webhooks.create_webhook(ctx, project, webhook)


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=_ERRORS)
def get_webhook(project: str, webhook_id: RowId, ctx: ContextDep) -> WebhookPublic:
    return webhooks.get_webhook(ctx, project, webhook_id)


@router.put("/{webhook_id}", response_model=WebhookPublic, responses=_ERRORS)
def update_webhook(
    project: str, webhook_id: RowId, update: WebhookUpdate, ctx: ContextDep
) -> WebhookPublic:
    """Given fields replace the stored ones; the secret cannot be changed (delete, create)."""
    return webhooks.update_webhook(ctx, project, webhook_id, update)


@router.delete("/{webhook_id}", status_code=204, responses=_ERRORS)
def delete_webhook(project: str, webhook_id: RowId, ctx: ContextDep) -> Response:
    """Delete a webhook with its pending deliveries and its log."""
    webhooks.delete_webhook(ctx, project, webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/test", response_model=WebhookTestResult, responses=_ERRORS)
async def send_test_event(project: str, webhook_id: RowId, ctx: ContextDep) -> WebhookTestResult:
    """Send a signed ``test`` event now (even to a disabled webhook) and report what the
    receiver answered: status, latency and the start of its body, or the error."""
    return await webhooks.send_test_event(ctx, project, webhook_id)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryPublic], responses=_ERRORS)
def list_deliveries(
    project: str,
    webhook_id: RowId,
    ctx: ContextDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[DeliveryPublic]:
    """The delivery log, newest first: status, attempts and what each attempt got."""
    return webhooks.list_deliveries(ctx, project, webhook_id, limit)
