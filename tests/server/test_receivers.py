"""PagerDuty and email receivers through the real app's worker: PagerDuty Events v2 to a real
HTTP receiver standing in for the Events API, mail to a real SMTP server (aiosmtpd) on
127.0.0.1; one message per notification, test sends logged like any delivery."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from collapsewatch_server.app import create_app
from collapsewatch_server.config import Settings
from tests.helpers import JSON, free_port
from tests.webhook_support import Receiver, put_events

FAST = {
    "webhook_backoff_base_s": 0.05,
    "webhook_backoff_max_s": 0.2,
    "worker_poll_s": 0.1,
    "notify_group_wait_s": 0.0,
    "notify_group_interval_s": 0.0,
}
HOOKS = "/api/v1/projects/p/webhooks"


class Mailbox:
    """An aiosmtpd handler keeping every message; ``refuse`` answers RCPT with a 550."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []
        self.refuse = False

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=policy.default))
        )
        return "250 Message accepted"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} mails"
            time.sleep(0.05)
        return [m for _, m in self.messages]


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
def app_with(sqlite_url: str) -> Iterator[Any]:
    clients: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        client = TestClient(create_app(Settings(db_url=sqlite_url, **(FAST | overrides))))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def settled(client: TestClient, wid: int, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        log = client.get(f"{HOOKS}/{wid}/deliveries").json()
        if len(log) >= count and all(d["status"] in ("delivered", "failed") for d in log):
            return list(log)
        assert time.monotonic() < deadline, log
        time.sleep(0.05)


def test_pagerduty_needs_a_routing_key_and_gets_trigger_then_resolve(app_with: Any) -> None:
    client = app_with()
    with Receiver() as events_api:
        r = client.post(HOOKS, json={"url": events_api.url, "format": "pagerduty"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "routing_key"]
        r = client.post(
            HOOKS, json={"url": events_api.url, "format": "pagerduty", "routing_key": "R0UTING"}
        )
        assert r.status_code == 201, r.text
        wid = r.json()["id"]
        assert client.post(f"{HOOKS}/{wid}/test", headers=JSON).json()["ok"] is True
        ctx = client.app.state.context  # type: ignore[attr-defined]
        run_events = put_events(ctx, "p", 24, severity="critical")
        (test, fired) = events_api.wait_for(2)
        assert test.json()["event_action"] == "trigger" and test.json()["routing_key"] == "R0UTING"
        body = fired.json()
        assert body["event_action"] == "trigger" and body["payload"]["severity"] == "critical"
        assert len(body["payload"]["custom_details"]["alerts"]) == len(run_events) == 24
        run_id = client.get("/api/v1/alerts", params={"project": "p"}).json()[0]["run_id"]
        put_events(ctx, "p", 24, status="resolved", run_id=uuid.UUID(run_id))
        (_, _, resolved) = events_api.wait_for(3)
        assert resolved.json()["event_action"] == "resolve"
        assert resolved.json()["dedup_key"] == body["dedup_key"]
    log = settled(client, wid, 3)
    assert [(d["test"], len(d["event_ids"])) for d in log] == [(False, 24), (False, 24), (True, 0)]


def test_email_is_one_message_per_notification_and_its_test_send_is_logged(
    app_with: Any, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    client = app_with(smtp_host="127.0.0.1", smtp_port=port, smtp_from="cw@lab.example")
    for url in ("https://x.example/", "mailto:not an address"):
        bad = client.post(HOOKS, json={"url": url, "format": "email"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "url"]
        assert "mailto:address" in bad.text
    r = client.post(HOOKS, json={"url": "mailto:ops@lab.example,ml@lab.example", "format": "email"})
    assert r.status_code == 201, r.text
    wid = r.json()["id"]
    result = client.post(f"{HOOKS}/{wid}/test", headers=JSON).json()
    assert result["ok"] is True and result["status_code"] == 250
    put_events(client.app.state.context, "p", 24, severity="critical", run_name="vit-24")  # type: ignore[attr-defined]
    test, alert = mailbox.wait_for(2)
    assert mailbox.messages[1][0] == ["ops@lab.example", "ml@lab.example"]
    assert alert["From"] == "cw@lab.example"
    assert alert["Subject"].startswith(
        "[collapsewatch] 🔴 Logged scalars: metric latency of run vit-24"
    )
    body = alert.get_content()  # type: ignore[attr-defined]
    assert body.count("latency: latency high 0.9 (threshold 0.5)") == 24
    assert "Test from collapsewatch" in test["Subject"]
    log = settled(client, wid, 2)
    assert [(d["test"], d["status"], d["last_status_code"]) for d in log] == [
        (False, "delivered", 250),
        (True, "delivered", 250),
    ]


def test_a_mail_server_refusal_fails_at_once_and_an_absent_one_is_retried(
    app_with: Any, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    dead = free_port()
    client = app_with(smtp_host="127.0.0.1", smtp_port=dead)
    wid = client.post(HOOKS, json={"url": "mailto:ops@lab.example", "format": "email"}).json()["id"]
    put_events(client.app.state.context, "p", 1)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while True:  # nothing listens: retried, not failed
        (d,) = client.get(f"{HOOKS}/{wid}/deliveries").json()
        if d["attempts"] >= 2:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert d["status"] in ("pending", "delivering") and "Connection" in d["last_error"]

    mailbox.refuse = True
    refused = app_with(smtp_host="127.0.0.1", smtp_port=port)
    result = refused.post(f"{HOOKS}/{wid}/test", headers=JSON).json()
    assert result["ok"] is False and result["error"].startswith("recipients refused")
