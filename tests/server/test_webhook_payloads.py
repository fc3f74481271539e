"""Webhook bodies: the generic payload, and Slack and Discord messages with the same facts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from collapsewatch_server.webhooks import payloads
from collapsewatch_web.api_schemas.alerts import AlertEventPublic
from collapsewatch_web.api_schemas.webhooks import WebhookPayload

RUN_ID = uuid.UUID("0b7d6c44-8c1e-4c36-9a57-7a0c3e7f7c11")
URL = f"http://127.0.0.1:8420/runs/{RUN_ID}?step=1200"


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


def test_generic_payload_carries_every_fact() -> None:
    body = payloads.render(payloads.build_payload(event()), "generic")
    doc = json.loads(body)
    assert WebhookPayload.model_validate(doc)  # the documented schema, exactly
    assert doc == {
        "type": "alert.firing",
        "event_id": "5f1e3a0e-0d8f-4a5e-9a8c-2d3b4c5d6e7f",
        "status": "firing",
        "severity": "critical",
        "project": "vision",
        "run": {"id": str(RUN_ID), "name": "relu-lr0.1"},
        "rule": {"id": 7, "name": "dead units"},
        "indicator": "dead_fraction",
        "probes": ["fc1"],
        "value": 0.625,
        "threshold": 0.5,
        "step": 1200,
        "reminder": False,
        "message": "dead_fraction 0.625 above 0.5 on fc1",
        "time": "2025-05-01T12:00:00Z",
        "url": URL,
    }


@pytest.mark.parametrize("status", ["firing", "resolved", "nodata"])
def test_type_follows_the_status(status: str) -> None:
    doc = json.loads(payloads.render(payloads.build_payload(event(status=status)), "generic"))
    assert doc["type"] == f"alert.{status}"


def test_nodata_event_without_rule_or_value() -> None:
    ev = event(
        status="nodata", rule_id=None, rule_name=None, probe=None, indicator=None, value=None
    )
    doc = json.loads(payloads.render(payloads.build_payload(ev), "generic"))
    assert doc["rule"] is None and doc["probes"] == [] and doc["value"] is None
    slack = json.loads(payloads.render(payloads.build_payload(ev), "slack"))
    assert slack["text"].startswith("⏸️ No data: run relu-lr0.1 stopped sending")


def test_non_finite_value_is_valid_json() -> None:
    payload = payloads.build_payload(event(value=float("nan")))
    assert json.loads(payloads.render(payload, "generic"))["value"] is None
    assert "value nan (threshold 0.5)" in json.loads(payloads.render(payload, "slack"))["text"]


def test_slack_message_is_text_plus_blocks_with_the_facts_and_a_link() -> None:
    doc = json.loads(payloads.render(payloads.build_payload(event()), "slack"))
    assert set(doc) == {"text", "blocks"}
    assert doc["text"].startswith("🔴 Firing [critical]: dead units on run relu-lr0.1")
    for fact in ("fc1", "dead_fraction", "0.625 (threshold 0.5)", "step 1200"):
        assert fact in doc["text"]
    types = [b["type"] for b in doc["blocks"]]
    assert types == ["header", "section", "actions", "context"]
    header, section, actions, _ = doc["blocks"]
    assert header["text"]["type"] == "plain_text" and "dead units" in header["text"]["text"]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in section["fields"]}
    assert fields["*Run*"] == "relu-lr0.1"
    assert fields["*Probe*"] == "fc1"
    assert fields["*Value*"] == "0.625 (threshold 0.5)"
    assert fields["*Step*"] == "1200"
    assert len(section["fields"]) <= 10
    assert actions["elements"][0]["url"] == URL


def test_slack_escapes_user_text() -> None:
    doc = json.loads(payloads.render(payloads.build_payload(event(run_name="a<b>&c")), "slack"))
    fields = [f["text"] for f in doc["blocks"][1]["fields"]]
    assert "*Run*\na&lt;b&gt;&amp;c" in fields


@pytest.mark.parametrize(
    ("changes", "colour", "emoji"),
    [
        ({"severity": "critical"}, payloads.SEVERITY_COLOUR["critical"], "🔴"),
        ({"severity": "warning"}, payloads.SEVERITY_COLOUR["warning"], "🟠"),
        ({"severity": "info"}, payloads.SEVERITY_COLOUR["info"], "🔵"),
        ({"status": "resolved"}, payloads.RESOLVED_COLOUR, "✅"),
        ({"status": "nodata"}, payloads.NODATA_COLOUR, "⏸️"),
    ],
)
def test_discord_message_has_content_and_an_embed_coloured_by_severity(
    changes: dict[str, Any], colour: int, emoji: str
) -> None:
    doc = json.loads(payloads.render(payloads.build_payload(event(**changes)), "discord"))
    assert doc["content"].startswith(emoji)
    assert doc["allowed_mentions"] == {"parse": []}
    (embed,) = doc["embeds"]
    assert embed["color"] == colour
    assert embed["url"] == URL
    assert embed["timestamp"] == "2025-05-01T12:00:00+00:00"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Run"] == "relu-lr0.1" and fields["Rule"] == "dead units"
    assert len(embed["title"]) <= 256 and len(doc["content"]) <= 2000


def test_long_texts_are_cut_to_the_services_limits() -> None:
    ev = event(message="x" * 5000, rule_name="r" * 128, run_name="n" * 128)
    discord = json.loads(payloads.render(payloads.build_payload(ev), "discord"))
    assert len(discord["content"]) == 2000 and len(discord["embeds"][0]["description"]) == 4096
    slack = json.loads(payloads.render(payloads.build_payload(ev), "slack"))
    assert len(slack["text"]) <= 3000 and len(slack["blocks"][0]["text"]["text"]) <= 150


def test_reminder_says_still_firing() -> None:
    doc = json.loads(payloads.render(payloads.build_payload(event(reminder=True)), "slack"))
    assert "Still firing" in doc["text"]


@pytest.mark.parametrize("fmt", ["generic", "slack", "discord"])
def test_test_event_renders_in_every_format(fmt: str) -> None:
    payload = payloads.make_test_payload("vision", "http://127.0.0.1:8420/", datetime.now(UTC))
    doc = json.loads(payloads.render(payload, fmt))  # type: ignore[arg-type]
    if fmt == "generic":
        assert doc["type"] == "test" and doc["status"] == "test" and doc["run"]["id"] is None
    else:
        assert "Test from collapsewatch" in json.dumps(doc, ensure_ascii=False)
