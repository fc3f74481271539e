"""Sending one delivery (a notification: a group of events): render for the receiver's
format, sign, POST (or mail), classify the answer, decide what comes next. No database here:
the deliveries service claims jobs and records each :class:`Attempt`.

Retry policy: a 2xx delivers. 408, 429, 5xx, timeouts and connection errors are retried with
exponential backoff and full jitter (a delay drawn from ``[0, min(max, base * 2**(n-1))]``), or
after ``Retry-After`` when the receiver asks for longer; once the next attempt would fall after
``created_at + webhook_retry_horizon_s`` the delivery fails. Any other answer (a 3xx, since
redirects are not followed; a 4xx; a target the SSRF guard refuses) fails at once: repeating
the same request would get the same answer.

Delivery is at least once: a process that dies between the receiver's answer and recording it
sends again after its lease expires. Receivers deduplicate on ``webhook-id`` (the notification
id, the same on every attempt; PagerDuty on its ``dedup_key``).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from collapsewatch._version import __version__
from collapsewatch.pipeline.backoff import backoff_s, parse_retry_after
from collapsewatch_server import errors
from collapsewatch_server.config import Settings
from collapsewatch_server.tables import utcnow
from collapsewatch_server.webhooks import email, pagerduty, payloads, signing, ssrf
from collapsewatch_server.webhooks.payloads import Notification
from collapsewatch_web.api_schemas.webhooks import (
    DeliveryStatus,
    WebhookFormat,
    WebhookPayload,
    WebhookTestResult,
)

USER_AGENT = f"collapsewatch-webhooks/{__version__}"
#: What is kept of a receiver's answer (the test endpoint shows it; the log does not).
RESPONSE_KEEP_CHARS = 1000
GAVE_UP = "{error}; giving up: the next attempt would fall after the {horizon} retry horizon"
REDIRECT_NOT_FOLLOWED = "redirect to {location!r} not followed: point the webhook at the final URL"
TIMED_OUT = "timed out after {timeout:g} s"


@dataclass(frozen=True)
class WebhookTarget:
    """What sending to a webhook needs (the secret included: never hand this to a client)."""

    id: int
    project: str
    url: str
    format: WebhookFormat
    secret: str
    enabled: bool
    routing_key: str | None = None


@dataclass(frozen=True)
class DeliveryJob:
    """A claimed delivery with everything needed to send it, and the claim that owns it."""

    delivery_id: int
    target: WebhookTarget
    notification: Notification
    attempts: int  # made before this one
    created_at: datetime
    #: The lease written by the claim; a result is applied only while it is still there.
    lease_until: datetime


@dataclass(frozen=True)
class Attempt:
    """One attempt at a delivery and what comes next: ``status`` pending (retry at
    ``next_attempt_at``), delivered or failed."""

    attempted_at: datetime
    status: DeliveryStatus
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class SendResult:
    """What one POST got: a status code, or an error (``retryable`` says which kind)."""

    status_code: int | None
    latency_ms: float
    error: str | None = None
    body: str = ""
    retry_after_s: float | None = None
    retryable: bool = True

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def should_retry(self) -> bool:
        if self.status_code is None:
            return self.retryable  # timeouts and connection errors are; refusals are not
        return self.status_code in (408, 429) or self.status_code >= 500


def make_client(settings: Settings) -> httpx.AsyncClient:
    """The client every webhook request goes through: SSRF-guarded connections, no redirects,
    the configured timeout, no proxies from the environment."""
    return httpx.AsyncClient(
        transport=ssrf.guarded_transport(allow_private=settings.webhook_allow_private),
        timeout=httpx.Timeout(settings.webhook_timeout_s),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


async def _read_some(response: httpx.Response, limit: int) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit * 4:  # up to 4 bytes a character in UTF-8
            break
    return b"".join(chunks).decode("utf-8", errors="replace")[:limit]


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> SendResult:
    """POST ``body`` once; never raises for anything the network or the receiver does."""
    start = time.perf_counter()

    def ms() -> float:
        return round((time.perf_counter() - start) * 1000.0, 3)

    try:
        # httpx's timeout applies per phase (connect, write, read); this bounds the whole.
        async with asyncio.timeout(timeout_s):
            async with client.stream(
                "POST", url, content=body, headers={"Content-Type": "application/json", **headers}
            ) as response:
                text = await _read_some(response, RESPONSE_KEEP_CHARS)
    except ssrf.UnsafeTarget as exc:
        return SendResult(None, ms(), str(exc), retryable=False)
    except (TimeoutError, httpx.TimeoutException):
        return SendResult(None, ms(), TIMED_OUT.format(timeout=timeout_s))
    except (httpx.HTTPError, OSError) as exc:
        return SendResult(None, ms(), f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
    except ValueError as exc:  # a URL httpx cannot use: the same next time
        return SendResult(None, ms(), str(exc), retryable=False)
    latency = ms()
    code = response.status_code
    error = None
    if response.is_redirect:
        error = REDIRECT_NOT_FOLLOWED.format(location=response.headers.get("location", ""))
    elif not 200 <= code < 300:
        error = f"HTTP {code}"
    retry_after = parse_retry_after(response.headers.get("retry-after"), utcnow())
    return SendResult(code, latency, error, text, retry_after)


class Deliverer:
    """Sends claimed deliveries and says what each attempt comes to; owns one HTTP client."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or make_client(settings)
        self.rng = rng or random.Random()
        self.horizon = timedelta(seconds=settings.webhook_retry_horizon_s)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def attempt(self, job: DeliveryJob) -> Attempt:
        """Send one claimed delivery (signed; a disabled webhook's is not sent) and classify
        the answer; never raises for anything the network or the receiver does."""
        attempted_at = utcnow()
        if not job.target.enabled:
            result = SendResult(None, 0.0, errors.WEBHOOK_DISABLED, retryable=False)
        else:
            payload = payloads.build_payload(job.notification)
            result = await send(self.client, job.target, payload, self.settings)
        status, next_at, error = self._outcome(job, result)
        return Attempt(attempted_at, status, result.status_code, result.latency_ms, error, next_at)

    def _outcome(
        self, job: DeliveryJob, result: SendResult
    ) -> tuple[DeliveryStatus, datetime | None, str | None]:
        """(new status, next attempt time, error to record) after one attempt."""
        if result.ok:
            return DeliveryStatus.delivered, None, None
        if not result.should_retry:
            return DeliveryStatus.failed, None, result.error
        now = utcnow()
        delay = backoff_s(
            job.attempts + 1,
            self.settings.webhook_backoff_base_s,
            self.settings.webhook_backoff_max_s,
            self.rng,
        )
        if result.retry_after_s is not None:
            delay = max(delay, result.retry_after_s)
        next_at = now + timedelta(seconds=delay)
        if next_at > job.created_at + self.horizon:
            horizon = _duration(self.horizon.total_seconds())
            return DeliveryStatus.failed, None, GAVE_UP.format(error=result.error, horizon=horizon)
        return DeliveryStatus.pending, next_at, result.error


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


async def send(
    client: httpx.AsyncClient, target: WebhookTarget, payload: WebhookPayload, settings: Settings
) -> SendResult:
    """Send one notification to a receiver in its format: a signed POST of the generic, Slack
    or Discord body, a PagerDuty Events v2 event, or a mail. Never raises for anything the
    network or the receiver does."""
    if target.format == "email":
        code, error, retryable, ms = await asyncio.to_thread(
            email.deliver, settings, payload, target.url
        )
        return SendResult(code, ms, error, retryable=retryable)
    if target.format == "pagerduty":
        if not target.routing_key:
            return SendResult(None, 0.0, errors.ROUTING_KEY_NEEDED, retryable=False)
        body = pagerduty.event_body(payload, target.routing_key)
    else:
        body = payloads.render(payload, target.format)
    headers = signing.sign_headers(target.secret, str(payload.id), body)
    return await post(client, target.url, body, headers, settings.webhook_timeout_s)


async def send_test(target: WebhookTarget, settings: Settings) -> tuple[WebhookPayload, SendResult]:
    """Send a signed test notification to ``target`` now; what was sent and what came back."""
    payload = payloads.make_test_payload(target.project, f"{settings.base_url}/", utcnow())
    async with make_client(settings) as client:
        return payload, await send(client, target, payload, settings)


def test_result(result: SendResult) -> WebhookTestResult:
    """What the test endpoint answers about a test send."""
    return WebhookTestResult(
        ok=result.ok,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error=result.error,
        response_body=result.body,
    )
