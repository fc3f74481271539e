"""Notification bodies: the generic payload of a group of alerts, Slack and Discord messages
summarising it, a PagerDuty Events v2 event and a mail with the same facts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from collapsewatch_server.webhooks import email, grouping, pagerduty, payloads
from collapsewatch_web.api_schemas.alerts import AlertEventPublic
from collapsewatch_web.api_schemas.webhooks import WebhookPayload

RUN_ID = uuid.UUID("0b7d6c44-8c1e-4c36-9a57-7a0c3e7f7c11")
URL = f"http://127.0.0.1:8420/runs/{RUN_ID}?step=1200"
NOTIFICATION = uuid.UUID("9a0e6a1c-3f1b-4f7e-8a55-1c2d3e4f5a6b")
KEY = f"status=firing|run={RUN_ID}|family=dead_units"


def event(**changes: Any) -> AlertEventPublic:
    fields: dict[str, Any] = {
        "id": uuid.UUID("5f1e3a0e-0d8f-4a5e-9a8c-2d3b4c5d6e7f"),
        "project": "vision",
        "run_id": RUN_ID,
        "run_name": "relu-lr0.1",
        "rule_id": 7,
        "rule_name": "dead units",
        "status": "firing",
        "severity": "critical",
        "indicator": "dead_fraction",
        "probe": "fc1",
        "value": 0.625,
        "threshold": 0.5,
        "step": 1200,
        "message": "dead_fraction 0.625 above 0.5 on fc1",
        "created_at": datetime(2025, 5, 1, 12, 0, tzinfo=UTC),
        "url": URL,
    }
    return AlertEventPublic(**(fields | changes))


def layers(count: int, **changes: Any) -> list[AlertEventPublic]:
    """One event per layer fc0..fc{count-1}, the first firing at step 240."""
    return [
        event(id=uuid.uuid4(), probe=f"fc{i}", step=240 + 10 * i, **changes) for i in range(count)
    ]


def payload_of(events: list[AlertEventPublic], key: str = KEY) -> WebhookPayload:
    return payloads.build_payload(
        payloads.Notification(NOTIFICATION, "vision", key, grouping.worst_first(events), "x")
    )


def test_generic_payload_carries_every_alert_worst_first() -> None:
    warn = event(id=uuid.uuid4(), probe="fc9", severity="warning", step=100)
    doc = json.loads(payloads.render(payload_of([warn, *layers(5)]), "generic"))
    assert WebhookPayload.model_validate(doc)  # the documented schema, exactly
    assert doc["type"] == "alert.firing" and doc["id"] == str(NOTIFICATION)
    assert doc["severity"] == "critical" and doc["family"] == "dead_units"
    assert doc["run"] == {"id": str(RUN_ID), "name": "relu-lr0.1"}
    assert doc["group"] == {"status": "firing", "run": str(RUN_ID), "family": "dead_units"}
    assert doc["title"] == "🔴 Dead units: 6 layers of run relu-lr0.1 critical since step 100"
    assert doc["since_step"] == 100
    assert [a["probe"] for a in doc["alerts"]] == ["fc0", "fc1", "fc2", "fc3", "fc4", "fc9"]
    first = doc["alerts"][0]
    assert first["rule"] == {"id": 7, "name": "dead units"} and first["value"] == 0.625
    assert first["threshold"] == 0.5 and first["step"] == 240 and first["url"] == URL


def test_resolutions_and_nodata_have_their_own_titles() -> None:
    resolved = payload_of(layers(3, status="resolved"))
    assert resolved.type == "alert.resolved"
    assert resolved.title == "✅ Resolved: Dead units on 3 layers of run relu-lr0.1"
    nodata = payload_of(
        [event(status="nodata", rule_id=None, rule_name=None, probe=None, indicator=None)]
    )
    assert nodata.title == "⏸️ No data: run relu-lr0.1 stopped sending"
    assert nodata.alerts[0].rule is None and nodata.alerts[0].probe is None


def test_non_finite_value_is_valid_json() -> None:
    payload = payload_of([event(value=float("nan"))])
    assert json.loads(payloads.render(payload, "generic"))["alerts"][0]["value"] is None


def test_slack_summarises_the_group_with_a_line_per_layer_and_a_link() -> None:
    doc = json.loads(payloads.render(payload_of(layers(24)), "slack"))
    assert set(doc) == {"text", "blocks"}
    assert doc["text"].startswith("🔴 Dead units: 24 layers of run relu-lr0.1 critical since")
    assert [b["type"] for b in doc["blocks"]] == ["header", "section", "actions", "context"]
    lines = doc["blocks"][1]["text"]["text"].split("\n")
    assert lines[0] == "• fc0: dead units 0.625 (threshold 0.5) at step 240 [critical]"
    assert len(lines) == payloads.CHAT_LINES + 1 and lines[-1] == "• … and 14 more"
    assert doc["blocks"][2]["elements"][0]["url"] == URL


def test_slack_escapes_user_text() -> None:
    doc = json.loads(payloads.render(payload_of([event(probe="a<b>&c")]), "slack"))
    assert "a&lt;b&gt;&amp;c" in doc["blocks"][1]["text"]["text"]


@pytest.mark.parametrize(
    ("changes", "colour", "emoji"),
    [
        ({"severity": "critical"}, payloads.SEVERITY_COLOUR["critical"], "🔴"),
        ({"severity": "warning"}, payloads.SEVERITY_COLOUR["warning"], "🟠"),
        ({"severity": "info"}, payloads.SEVERITY_COLOUR["info"], "🔵"),
        ({"status": "resolved"}, payloads.RESOLVED_COLOUR, "✅"),
        ({"status": "nodata", "indicator": None}, payloads.NODATA_COLOUR, "⏸️"),
    ],
)
def test_discord_message_has_content_and_an_embed_coloured_by_severity(
    changes: dict[str, Any], colour: int, emoji: str
) -> None:
    doc = json.loads(payloads.render(payload_of([event(**changes)]), "discord"))
    assert doc["content"].startswith(emoji)
    assert doc["allowed_mentions"] == {"parse": []}
    (embed,) = doc["embeds"]
    assert embed["color"] == colour and embed["url"] == URL
    assert embed["timestamp"] == "2025-05-01T12:00:00+00:00"
    assert len(embed["title"]) <= 256 and len(doc["content"]) <= 2000


def test_long_texts_are_cut_to_the_services_limits() -> None:
    events = [event(message="x" * 5000, rule_name="r" * 128, run_name="n" * 128)]
    discord = json.loads(payloads.render(payload_of(events), "discord"))
    assert len(discord["content"]) == 2000
    slack = json.loads(payloads.render(payload_of(events), "slack"))
    assert len(slack["text"]) <= 3000 and len(slack["blocks"][0]["text"]["text"]) <= 150


def test_reminders_say_still() -> None:
    assert " still critical" in payload_of([event(reminder=True)]).title


def test_pagerduty_triggers_and_resolves_one_alert_per_group() -> None:
    fired = json.loads(pagerduty.event_body(payload_of(layers(5)), "R0UTING"))
    assert fired["routing_key"] == "R0UTING" and fired["event_action"] == "trigger"
    assert fired["payload"]["severity"] == "critical"
    assert fired["payload"]["summary"].startswith("🔴 Dead units: 5 layers")
    assert len(fired["payload"]["custom_details"]["alerts"]) == 5
    assert fired["links"][0]["href"] == URL
    resolved_key = KEY.replace("status=firing", "status=resolved")
    resolved = json.loads(
        pagerduty.event_body(payload_of(layers(5, status="resolved"), resolved_key), "R0UTING")
    )
    assert resolved["event_action"] == "resolve" and "payload" not in resolved
    assert resolved["dedup_key"] == fired["dedup_key"]


def test_email_is_one_message_with_a_line_per_layer() -> None:
    assert email.recipients("mailto:a@x.org,b@y.org") == ["a@x.org", "b@y.org"]
    with pytest.raises(ValueError, match="mailto:"):
        email.recipients("https://x.org")
    msg = email.message(payload_of(layers(3)), "cw@x.org", ["a@x.org"])
    assert (
        msg["Subject"]
        == "[collapsewatch] 🔴 Dead units: 3 layers of run relu-lr0.1 critical since step 240"
    )
    body = msg.get_content()
    assert "fc2: dead units 0.625 (threshold 0.5) at step 260 [critical]" in body and URL in body


@pytest.mark.parametrize("fmt", ["generic", "slack", "discord"])
def test_test_event_renders_in_every_format(fmt: str) -> None:
    payload = payloads.make_test_payload("vision", "http://127.0.0.1:8420/", datetime.now(UTC))
    doc = json.loads(payloads.render(payload, fmt))  # type: ignore[arg-type]
    if fmt == "generic":
        assert doc["type"] == "test" and doc["status"] == "test" and doc["run"]["id"] is None
    else:
        assert "Test from collapsewatch" in json.dumps(doc, ensure_ascii=False)
