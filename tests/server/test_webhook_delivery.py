"""Delivery through the worker of a real app, to a real receiver on 127.0.0.1: signatures,
retries with backoff, Retry-After, outages, timeouts, permanent failures, the retry horizon."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collapsewatch_server import errors, worker
from collapsewatch_server.app import create_app
from collapsewatch_server.config import Settings
from collapsewatch_server.webhooks import deliverer, signing
from tests.helpers import JSON, free_port
from tests.webhook_support import Answer, Arrival, Receiver, put_events

#: Fast retries so outages last fractions of a second.
FAST = {
    "webhook_backoff_base_s": 0.05,
    "webhook_backoff_max_s": 0.2,
    "worker_poll_s": 0.1,
    "webhook_timeout_s": 2.0,
    "notify_group_wait_s": 0.0,
    "notify_group_interval_s": 0.0,
}

Server = Callable[..., Any]


@pytest.fixture
def server(sqlite_url: str) -> Iterator[Callable[..., Any]]:
    """``server(**settings)`` -> a TestClient of an app with its worker running."""
    clients: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        client = TestClient(create_app(Settings(db_url=sqlite_url, **(FAST | overrides))))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def add_hook(client: TestClient, receiver: Receiver, project: str = "p", **fields: Any) -> int:
    r = client.post(f"/api/v1/projects/{project}/webhooks", json={"url": receiver.url, **fields})
    assert r.status_code == 201, r.text
    receiver.secret = r.json()["secret"]
    return int(r.json()["id"])


def fire(client: TestClient, count: int = 1, project: str = "p", **kw: Any) -> list[str]:
    return put_events(client.app.state.context, project, count, **kw)  # type: ignore[attr-defined]


def log_of(client: TestClient, wid: int, project: str = "p") -> list[dict[str, Any]]:
    r = client.get(f"/api/v1/projects/{project}/webhooks/{wid}/deliveries")
    assert r.status_code == 200, r.text
    return list(r.json())


def settle(client: TestClient, wid: int, until: Callable[[list[dict[str, Any]]], bool]) -> Any:
    """Poll the delivery log until ``until(log)`` holds (the worker records after sending)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = log_of(client, wid)
        if until(log):
            return log
        time.sleep(0.02)
    raise AssertionError(f"delivery log never settled: {log}")


def event_ids(arrivals: list[Arrival]) -> list[str]:
    """The events the notifications carried, in arrival order."""
    return [alert["event_id"] for a in arrivals for alert in a.json()["alerts"]]


def final(log: list[dict[str, Any]]) -> bool:
    return bool(log) and all(d["status"] in ("delivered", "failed") for d in log)


# --------------------------------------------------------------------------- the basics


def test_a_signed_event_arrives_and_verifies(server: Server) -> None:
    client = server()
    with Receiver() as receiver:
        wid = add_hook(client, receiver)
        (event_id,) = fire(client)
        (arrival,) = receiver.wait_for(1)
        assert arrival.signature_error is None
        assert arrival.headers["content-type"] == "application/json"
        assert arrival.headers["user-agent"].startswith("collapsewatch-webhooks/")
        doc = arrival.json()
        assert doc["type"] == "alert.firing" and doc["id"] == arrival.id
        assert [a["event_id"] for a in doc["alerts"]] == [event_id]
        assert doc["url"].startswith("http://127.0.0.1:8420/runs/")
        # the same request with one byte changed does not verify
        with pytest.raises(signing.SignatureError):
            signing.verify(receiver.secret or "", arrival.headers, arrival.body + b" ")
        (delivery,) = settle(client, wid, final)
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1
        assert delivery["log"][0]["status_code"] == 200


def test_503_three_times_then_200_arrives_once_after_four_attempts(server: Server) -> None:
    client = server()
    with Receiver(503, 503, 503, 200) as receiver:
        wid = add_hook(client, receiver)
        fire(client)
        receiver.wait_for(1)
        (delivery,) = settle(client, wid, final)
        time.sleep(0.3)  # nothing more comes
        assert [a.answered for a in receiver.arrivals] == [503, 503, 503, 200]
        assert len({a.id for a in receiver.arrivals}) == 1
        assert all(a.signature_error is None for a in receiver.arrivals)
        assert delivery["status"] == "delivered" and delivery["attempts"] == 4
        assert [a["status_code"] for a in delivery["log"]] == [503, 503, 503, 200]
        assert [a["error"] for a in delivery["log"]] == ["HTTP 503"] * 3 + [None]


def test_retry_after_is_honoured(server: Server) -> None:
    client = server()
    with Receiver(Answer(429, {"Retry-After": "1"})) as receiver:
        add_hook(client, receiver)
        fire(client)
        receiver.wait_for(1)
        first, second = receiver.arrivals
        assert first.answered == 429
        assert second.at - first.at >= 0.95  # backoff alone would be <= 0.05 s


def test_a_receiver_down_for_a_while_gets_everything_that_fired_meanwhile(
    server: Server,
) -> None:
    client = server()
    receiver = Receiver().up()
    wid = add_hook(client, receiver)
    receiver.down()
    fired = []
    for _ in range(3):
        fired += fire(client)
        time.sleep(0.2)
    settle(client, wid, lambda log: len(log) == 3 and all(d["attempts"] >= 2 for d in log))
    receiver.up()
    try:
        receiver.wait_for(3)
        log = settle(client, wid, final)
        time.sleep(0.3)
        assert sorted(event_ids(receiver.arrivals)) == sorted(fired)  # each exactly once
        assert len({a.id for a in receiver.arrivals}) == 3
        assert all(d["status"] == "delivered" for d in log)
        errors_seen = {a["error"].split(":")[0] for d in log for a in d["log"] if a["error"]}
        assert errors_seen == {"ConnectError"}
    finally:
        receiver.down()


def test_a_timeout_is_retried(server: Server) -> None:
    client = server(webhook_timeout_s=0.3)
    with Receiver(Answer(200, delay_s=0.8), 200) as receiver:
        wid = add_hook(client, receiver)
        fire(client)
        (delivery,) = settle(client, wid, final)
        assert delivery["status"] == "delivered" and delivery["attempts"] == 2
        assert delivery["log"][0]["error"] == deliverer.TIMED_OUT.format(timeout=0.3)


@pytest.mark.parametrize(("answer", "error"), [(400, "HTTP 400"), (410, "HTTP 410")])
def test_other_4xx_fail_at_once(server: Server, answer: int, error: str) -> None:
    client = server()
    with Receiver(answer) as receiver:
        wid = add_hook(client, receiver)
        fire(client)
        (delivery,) = settle(client, wid, final)
        time.sleep(0.3)
        assert len(receiver.arrivals) == 1
        assert (delivery["status"], delivery["attempts"], delivery["last_error"]) == (
            "failed",
            1,
            error,
        )


def test_a_redirect_is_not_followed(server: Server) -> None:
    client = server()
    with Receiver(Answer(307, {"Location": "http://169.254.169.254/"})) as receiver:
        wid = add_hook(client, receiver)
        fire(client)
        (delivery,) = settle(client, wid, final)
        assert delivery["status"] == "failed" and len(receiver.arrivals) == 1
        assert delivery["last_error"] == deliverer.REDIRECT_NOT_FOLLOWED.format(
            location="http://169.254.169.254/"
        )


def test_retries_stop_at_the_horizon(server: Server) -> None:
    client = server(webhook_retry_horizon_s=0.5)
    with Receiver(*[503] * 100) as receiver:
        wid = add_hook(client, receiver)
        fire(client)
        (delivery,) = settle(client, wid, final)
        assert delivery["status"] == "failed" and delivery["attempts"] >= 2
        assert delivery["last_error"].startswith("HTTP 503; giving up")
        assert "0.5 s retry horizon" in delivery["last_error"]


def test_a_webhook_disabled_before_sending_sends_nothing(server: Server) -> None:
    client = server(worker=False)  # nothing sends until we say so
    with Receiver() as receiver:
        wid = add_hook(client, receiver)
        fire(client)
        client.put(f"/api/v1/projects/p/webhooks/{wid}", json={"enabled": False})
    client2 = server()  # a second process on the same database, with a worker
    (delivery,) = settle(client2, wid, final)
    assert delivery["status"] == "failed" and delivery["last_error"] == errors.WEBHOOK_DISABLED
    assert receiver.arrivals == []


def test_a_send_cut_off_by_shutdown_is_handed_back_and_sent_by_the_next_process(
    server: Server,
) -> None:
    """Stopping gives sends in flight a grace period, then cancels them and releases their
    claims: the next process sends at once instead of waiting for the lease to expire."""
    first = server(webhook_timeout_s=10.0)
    with Receiver(Answer(200, delay_s=worker.STOP_GRACE_S + 1.0)) as receiver:
        wid = add_hook(first, receiver)
        fire(first)
        settle(first, wid, lambda log: bool(log) and log[0]["status"] == "delivering")
        first.__exit__(None, None, None)  # the server process stops mid-send
        (delivery,) = log_of(server(worker=False), wid)
        assert (delivery["status"], delivery["attempts"]) == ("pending", 0)
        second = server()
        arrivals = receiver.wait_for(2, timeout=worker.lease_s(Settings()) / 2)
        assert arrivals[0].id == arrivals[1].id  # at least once: the cut-off send, then this
        (delivery,) = settle(second, wid, final)
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1


@pytest.mark.parametrize("fmt", ["slack", "discord"])
def test_chat_formats_arrive_as_their_service_expects(server: Server, fmt: str) -> None:
    client = server()
    with Receiver() as receiver:
        add_hook(client, receiver, format=fmt)
        fire(client, severity="critical")
        (arrival,) = receiver.wait_for(1)
        doc = arrival.json()
        assert arrival.signature_error is None
        if fmt == "slack":
            assert doc["text"].startswith("🔴 Logged scalars: metric latency of run run-a critical")
            assert doc["blocks"][1]["text"]["text"].startswith("• latency: latency high 0.9")
        else:
            assert doc["content"].startswith("🔴") and doc["embeds"][0]["color"] == 0xE74C3C


# ---------------------------------------------------------------------- the test endpoint


def test_the_test_endpoint_reports_what_the_receiver_said(server: Server) -> None:
    client = server(worker=False)
    with Receiver(Answer(418, body="I'm a teapot " + "x" * 2000)) as receiver:
        wid = add_hook(client, receiver)
        r = client.post(f"/api/v1/projects/p/webhooks/{wid}/test", headers=JSON)
        assert r.status_code == 200
        result = r.json()
        assert (result["ok"], result["status_code"], result["error"]) == (False, 418, "HTTP 418")
        assert result["response_body"].startswith("I'm a teapot")
        assert len(result["response_body"]) == 1000 and result["latency_ms"] > 0
        (arrival,) = receiver.arrivals
        assert arrival.signature_error is None and arrival.json()["type"] == "test"
        ok = client.post(f"/api/v1/projects/p/webhooks/{wid}/test", headers=JSON).json()
        assert ok["ok"] is True and ok["status_code"] == 200 and ok["response_body"] == "ok"
        assert receiver.arrivals[0].id != receiver.arrivals[1].id  # a fresh id every time
    # test sends are logged like any delivery, newest first
    log = log_of(client, wid)
    assert [(d["test"], d["status"], d["uid"]) for d in log] == [
        (True, "delivered", receiver.arrivals[1].id),
        (True, "failed", receiver.arrivals[0].id),
    ]
    assert [a["status_code"] for d in log for a in d["log"]] == [200, 418]


def test_the_test_endpoint_reports_a_dead_port(server: Server) -> None:
    client = server(worker=False)
    r = client.post(
        "/api/v1/projects/p/webhooks", json={"url": f"http://127.0.0.1:{free_port()}/hook"}
    )
    result = client.post(f"/api/v1/projects/p/webhooks/{r.json()['id']}/test", headers=JSON).json()
    assert result["ok"] is False and result["status_code"] is None
    assert result["error"].startswith("ConnectError")


# ------------------------------------------------------------------------ pure policies


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert deliverer.parse_retry_after("120", now) == 120.0
    assert deliverer.parse_retry_after("Thu, 01 May 2025 12:00:30 GMT", now) == 30.0
    assert deliverer.parse_retry_after("Thu, 01 May 2025 11:00:00 GMT", now) == 0.0
    assert deliverer.parse_retry_after("soon", now) is None
    assert deliverer.parse_retry_after(None, now) is None


def test_backoff_doubles_with_full_jitter_up_to_the_cap() -> None:
    rng = random.Random(1)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 512.0), (11, 600.0), (50, 600.0)]:
        delays = [deliverer.backoff_s(retry, 1.0, 600.0, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling  # jitter spreads over the whole range


@pytest.mark.parametrize(
    ("result", "retry"),
    [
        (deliverer.SendResult(200, 1.0), False),
        (deliverer.SendResult(408, 1.0, "HTTP 408"), True),
        (deliverer.SendResult(429, 1.0, "HTTP 429"), True),
        (deliverer.SendResult(500, 1.0, "HTTP 500"), True),
        (deliverer.SendResult(503, 1.0, "HTTP 503"), True),
        (deliverer.SendResult(404, 1.0, "HTTP 404"), False),
        (deliverer.SendResult(301, 1.0, "redirect"), False),
        (deliverer.SendResult(None, 1.0, "ConnectError"), True),
        (deliverer.SendResult(None, 1.0, "refused by the guard", retryable=False), False),
    ],
)
def test_what_is_retried(result: deliverer.SendResult, retry: bool) -> None:
    assert result.should_retry is retry


def test_after_an_outage_every_alert_arrives_soon_after_the_receiver_returns(
    server: Server,
) -> None:
    """A receiver outage scaled down: 4 s, with retries backing off up to 8 s. Left to their
    own backoff the 40 notifications would trickle in over several seconds after the return;
    once the first retry gets through, the receiver's backlog is released at once, in order,
    50 a second, so every alert arrives within 3 s of the return, exactly once."""
    cap, rate, count = 8.0, 50.0, 40
    client = server(
        webhook_backoff_base_s=0.1, webhook_backoff_max_s=cap, webhook_release_per_s=rate
    )
    receiver = Receiver().up()
    wid = add_hook(client, receiver)
    receiver.down()
    fired: list[str] = []
    for _ in range(8):  # alerts keep firing through the outage
        fired += fire(client, count // 8, one_run=False)
        time.sleep(0.5)
    settle(client, wid, lambda log: len(log) == count and all(d["attempts"] >= 1 for d in log))
    receiver.up()
    back = time.time()
    try:
        receiver.wait_for(count, timeout=30)
        log = settle(client, wid, final)
        time.sleep(0.3)  # nothing more comes
    finally:
        receiver.down()
    delays = sorted(a.at - back for a in receiver.arrivals)
    assert sorted(event_ids(receiver.arrivals)) == sorted(fired)  # each exactly once
    assert len(receiver.arrivals) == count and all(d["status"] == "delivered" for d in log)
    print(f"after the return: median {delays[count // 2]:.2f} s, last {delays[-1]:.2f} s")
    assert delays[-1] <= 3.0, delays
