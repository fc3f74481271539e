"""Webhooks of a project, their deliveries and the payload receivers get (HTTP API v1)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from collapsewatch.schemas.bounds import Label
from collapsewatch_web.api_schemas.alerts import EventStatus, Severity

WebhookFormat = Literal["generic", "slack", "discord", "pagerduty", "email"]
#: The formats, in the order forms and the CLI offer them.
WEBHOOK_FORMATS: tuple[WebhookFormat, ...] = get_args(WebhookFormat)


class WebhookCreate(BaseModel):
    """A new webhook; without ``secret`` one is generated and returned once."""

    model_config = ConfigDict(extra="forbid")

    name: Label = Field(default="", max_length=128)
    url: Label = Field(min_length=1, max_length=2048)
    format: WebhookFormat = "generic"
    severities: list[Severity] = Field(default_factory=lambda: list(Severity), min_length=1)
    enabled: bool = True
    secret: Label | None = Field(
        default=None, min_length=24, max_length=256, description="whsec_<base64>, 24+ bytes"
    )
    routing_key: str | None = Field(
        default=None, min_length=1, max_length=64, description="PagerDuty's integration key"
    )


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Label | None = Field(default=None, max_length=128)
    url: Label | None = Field(default=None, min_length=1, max_length=2048)
    format: WebhookFormat | None = None
    severities: list[Severity] | None = Field(default=None, min_length=1)
    enabled: bool | None = None
    routing_key: str | None = Field(default=None, min_length=1, max_length=64)


class WebhookPublic(BaseModel):
    id: int
    project: str
    name: str
    url: str
    format: WebhookFormat
    severities: list[Severity]
    enabled: bool
    secret_hint: str = Field(description="the first characters of the secret, never all of it")
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="shown only in this answer")


class DeliveryStatus(StrEnum):
    """Where a delivery stands: due (pending, maybe after a retry delay), claimed by a sender
    (delivering, until its lease expires), or done (delivered, failed, or silenced: a silence
    made during its group wait matched all its events)."""

    pending = "pending"
    delivering = "delivering"
    delivered = "delivered"
    failed = "failed"
    #: every event it carried was silenced before it was sent: never sent
    silenced = "silenced"


class DeliveryAttemptPublic(BaseModel):
    attempted_at: datetime
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None


class DeliveryPublic(BaseModel):
    """One notification to one webhook (a group of events), with its attempts."""

    id: int
    uid: uuid.UUID = Field(description="the webhook-id receivers deduplicate on")
    webhook_id: int
    group: dict[str, str] = Field(description="what the events share: status, run, family, ...")
    event_ids: list[uuid.UUID] = Field(description="the events it carries, worst first")
    event_status: EventStatus
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    last_latency_ms: float | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    test: bool = Field(default=False, description="a test send (POST .../test)")
    log: list[DeliveryAttemptPublic] = Field(default_factory=list)


class WebhookTestResult(BaseModel):
    """What a receiver answered to ``POST .../webhooks/{id}/test``."""

    ok: bool
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    response_body: str = ""


class AlertItem(BaseModel):
    """One alert of a notification."""

    event_id: uuid.UUID
    status: EventStatus
    severity: Severity
    rule: dict[str, Any] | None = None
    indicator: str | None = None
    probe: str | None = None
    value: float | None = None
    threshold: float | None = None
    step: int | None = None
    reminder: bool = False
    message: str = ""
    time: datetime
    url: str


class WebhookPayload(BaseModel):
    """The generic JSON body of a webhook: one notification carrying a group of alerts that
    share a status (and by default a run and a family), worst first. Slack, Discord, PagerDuty
    and email get their own shapes of the same facts."""

    type: Literal["alert.firing", "alert.resolved", "alert.nodata", "test"]
    id: uuid.UUID = Field(description="the notification's id, also the webhook-id header")
    status: EventStatus | Literal["test"]
    severity: Severity = Field(description="the worst of its alerts")
    project: str
    run: dict[str, Any] = Field(description="id and name when its alerts are of one run")
    family: str | None = None
    group: dict[str, str] = Field(default_factory=dict)
    title: str = Field(description="one line saying it all")
    since_step: int | None = Field(default=None, description="the earliest step of its alerts")
    alerts: list[AlertItem] = Field(default_factory=list)
    time: datetime
    url: str
