"""Webhook bodies: pure functions from an alert event to the bytes a receiver gets.

``generic`` is the :class:`~collapsewatch_web.api_schemas.webhooks.WebhookPayload` JSON;
``slack`` and ``discord`` are messages those services' incoming webhooks post as they are,
carrying the same facts (severity, rule, run, probe, value vs threshold, step, a link to the
run at that step).
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime
from typing import Any

from collapsewatch_web.api_schemas.alerts import AlertEventPublic, Severity
from collapsewatch_web.api_schemas.webhooks import WebhookFormat, WebhookPayload

SEVERITY_EMOJI = {Severity.info: "🔵", Severity.warning: "🟠", Severity.critical: "🔴"}
RESOLVED_EMOJI = "✅"
NODATA_EMOJI = "⏸️"
TEST_EMOJI = "🧪"
#: Discord embed colours: resolved is green whatever the severity, nodata grey.
SEVERITY_COLOUR = {Severity.info: 0x3498DB, Severity.warning: 0xF39C12, Severity.critical: 0xE74C3C}
RESOLVED_COLOUR = 0x2ECC71
NODATA_COLOUR = 0x95A5A6
TEST_MESSAGE = "Test event from collapsewatch: this webhook is reachable and signed."

# Limits of the receiving services; longer texts are cut rather than rejected by them.
_SLACK_HEADER_MAX = 150
_SLACK_TEXT_MAX = 3000
_DISCORD_CONTENT_MAX = 2000
_DISCORD_TITLE_MAX = 256
_DISCORD_DESCRIPTION_MAX = 4096
_DISCORD_FIELD_MAX = 1024


def build_payload(event: AlertEventPublic) -> WebhookPayload:
    """The generic payload of an alert event."""
    return WebhookPayload(
        type=f"alert.{event.status.value}",  # type: ignore[arg-type]
        event_id=event.id,
        status=event.status,
        severity=event.severity,
        project=event.project,
        run={"id": str(event.run_id), "name": event.run_name},
        rule=None if event.rule_id is None else {"id": event.rule_id, "name": event.rule_name},
        indicator=event.indicator,
        probes=[event.probe] if event.probe else [],
        value=event.value,
        threshold=event.threshold,
        step=event.step,
        reminder=event.reminder,
        message=event.message,
        time=event.created_at,
        url=event.url,
    )


def make_test_payload(project: str, url: str, time: datetime) -> WebhookPayload:
    """A test event (``POST .../webhooks/{id}/test``): a fresh id, no run, no rule."""
    return WebhookPayload(
        type="test",
        event_id=uuid.uuid4(),
        status="test",
        severity=Severity.info,
        project=project,
        run={"id": None, "name": None},
        message=TEST_MESSAGE,
        time=time,
        url=url,
    )


def render(payload: WebhookPayload, fmt: WebhookFormat) -> bytes:
    """The request body for a webhook of format ``fmt`` (UTF-8 JSON, compact)."""
    if fmt == "generic":
        return payload.model_dump_json().encode()
    doc = slack_message(payload) if fmt == "slack" else discord_message(payload)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------ text


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def title(p: WebhookPayload) -> str:
    """One line saying what happened, with the severity's emoji."""
    rule = (p.rule or {}).get("name") or p.indicator or "alert"
    run = p.run.get("name") or "?"
    if p.status == "test":
        return f"{TEST_EMOJI} Test from collapsewatch ({p.project})"
    if p.status == "resolved":
        return f"{RESOLVED_EMOJI} Resolved: {rule} on run {run}"
    if p.status == "nodata":
        return f"{NODATA_EMOJI} No data: run {run} stopped sending"
    state = "Still firing" if p.reminder else "Firing"
    return f"{SEVERITY_EMOJI[p.severity]} {state} [{p.severity.value}]: {rule} on run {run}"


def facts(p: WebhookPayload) -> list[tuple[str, str]]:
    """(label, value) pairs shown as fields; only those the event has."""
    out = [("Project", p.project)]
    if p.run.get("name"):
        out.append(("Run", str(p.run["name"])))
    if p.rule:
        out.append(("Rule", str(p.rule.get("name"))))
    out.append(("Severity", p.severity.value))
    if p.probes:
        out.append(("Probe", ", ".join(p.probes)))
    if p.indicator:
        out.append(("Indicator", p.indicator))
    if p.value is not None or p.threshold is not None:
        out.append(("Value", f"{_num(p.value)} (threshold {_num(p.threshold)})"))
    if p.step is not None:
        out.append(("Step", str(p.step)))
    return out


def summary(p: WebhookPayload) -> str:
    """The plain-text fallback: the title and the facts on one line."""
    parts = [f"{label.lower()} {value}" for label, value in facts(p) if label != "Project"]
    line = title(p) + (" — " + ", ".join(parts) if parts else "")
    return f"{line}. {p.message}" if p.message else line


# ------------------------------------------------------------------------------ slack


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(p: WebhookPayload) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` (notifications, old clients) plus Block Kit."""
    fields = [
        {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(value)}"}
        for label, value in facts(p)
    ][:10]  # Slack allows 10 fields per section
    body = _slack_escape(p.message) if p.message else _slack_escape(title(p))
    return {
        "text": _cut(summary(p), _SLACK_TEXT_MAX),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _cut(title(p), _SLACK_HEADER_MAX)},
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _cut(body, _SLACK_TEXT_MAX)},
                "fields": fields,
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in collapsewatch"},
                        "url": p.url,
                    }
                ],
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"event {p.event_id} · {p.time.isoformat()}"}
                ],
            },
        ],
    }


# ---------------------------------------------------------------------------- discord


def _colour(p: WebhookPayload) -> int:
    if p.status == "resolved":
        return RESOLVED_COLOUR
    if p.status == "nodata":
        return NODATA_COLOUR
    return SEVERITY_COLOUR[p.severity]


def discord_message(p: WebhookPayload) -> dict[str, Any]:
    """An execute-webhook message: ``content`` plus one embed coloured by severity."""
    return {
        "content": _cut(summary(p), _DISCORD_CONTENT_MAX),
        # Run and rule names are user text: never let them ping @everyone or a role.
        "allowed_mentions": {"parse": []},
        "embeds": [
            {
                "title": _cut(title(p), _DISCORD_TITLE_MAX),
                "description": _cut(p.message or title(p), _DISCORD_DESCRIPTION_MAX),
                "url": p.url,
                "color": _colour(p),
                "fields": [
                    {"name": label, "value": _cut(value, _DISCORD_FIELD_MAX), "inline": True}
                    for label, value in facts(p)
                ],
                "timestamp": p.time.isoformat(),
                "footer": {"text": f"collapsewatch · event {p.event_id}"},
            }
        ],
    }
