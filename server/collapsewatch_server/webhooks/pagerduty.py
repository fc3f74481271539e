"""PagerDuty Events v2 bodies: a notification triggers (or, resolved, resolves) one PagerDuty
alert whose ``dedup_key`` is the notification's group key, so a group's resolution closes the
incident its firing opened."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from collapsewatch_server.webhooks.payloads import detail_lines
from collapsewatch_web.api_schemas.alerts import Severity
from collapsewatch_web.api_schemas.webhooks import WebhookPayload

#: Where Events v2 are sent unless a receiver names another endpoint.
EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
#: PagerDuty's severities are critical, error, warning and info.
SEVERITY = {Severity.critical: "critical", Severity.warning: "warning", Severity.info: "info"}
_SUMMARY_MAX = 1024


def dedup_key(p: WebhookPayload) -> str:
    """The same for a group's firing and its resolution (the key without its status)."""
    labels = {k: v for k, v in p.group.items() if k != "status"}
    raw = json.dumps([p.project, sorted(labels.items())], separators=(",", ":"))
    return "collapsewatch-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def event_body(p: WebhookPayload, routing_key: str) -> bytes:
    """The Events v2 request body of a notification (a test send triggers a info alert)."""
    doc: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "resolve" if p.status == "resolved" else "trigger",
        "dedup_key": dedup_key(p) if p.status != "test" else f"collapsewatch-test-{p.id}",
    }
    if doc["event_action"] == "trigger":
        doc["payload"] = {
            "summary": p.title[:_SUMMARY_MAX],
            "source": f"collapsewatch/{p.project}",
            "severity": SEVERITY[p.severity],
            "timestamp": p.time.isoformat(),
            "component": p.run.get("name") or p.project,
            "group": p.family or "",
            "class": p.type,
            "custom_details": {"alerts": detail_lines(p), "notification": str(p.id)},
        }
        doc["links"] = [{"href": p.url, "text": "Open in collapsewatch"}]
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
