"""Webhooks end to end: real rules firing on real data, real server processes, a real receiver.

- A collapsing training run (SDK -> app in-process) sends one signed firing event for the
  dead-unit rule; its healthy control none; every event fired arrives once, signed.
- Alerts fired while the receiver is down, by a server that is then stopped, are delivered by
  the next server process on the same SQLite file.
- Two server processes on one Postgres deliver every event of a full outbox exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from collapsewatch_demo.scenarios import run_scenario
from collapsewatch_server import create_app
from collapsewatch_server.config import Settings
from collapsewatch_server.db import Database, make_engine
from collapsewatch_server.services.context import ServiceContext
from tests.alert_helpers import scalar_batch
from tests.e2e.conftest import start_server
from tests.webhook_support import Answer, Arrival, Receiver, put_events

FAST_ENV = {
    "COLLAPSEWATCH_WEBHOOK_BACKOFF_BASE_S": "0.05",
    "COLLAPSEWATCH_WEBHOOK_BACKOFF_MAX_S": "0.2",
    "COLLAPSEWATCH_WORKER_POLL_S": "0.1",
    "COLLAPSEWATCH_NOTIFY_GROUP_WAIT_S": "0",
    "COLLAPSEWATCH_NOTIFY_GROUP_INTERVAL_S": "0",
}
RULE = {
    "name": "latency high",
    "indicator": "value",
    "probe": "latency",
    "condition": "above",
    "threshold": 0.5,
    "severity": "critical",
}


def add_webhook(http: Any, project: str, receiver: Receiver, **fields: Any) -> int:
    r = http.post(f"/api/v1/projects/{project}/webhooks", json={"url": receiver.url, **fields})
    assert r.status_code == 201, r.text
    receiver.secret = r.json()["secret"]
    return int(r.json()["id"])


def carried(arrivals: list[Arrival]) -> Counter[str]:
    """How often each event arrived, over every notification."""
    return Counter(alert["event_id"] for a in arrivals for alert in a.json()["alerts"])


def test_a_collapsing_run_sends_one_signed_dead_unit_alert_and_its_control_none(
    sqlite_url: str,
) -> None:
    app = create_app(Settings(db_url=sqlite_url, worker_poll_s=0.1, notify_group_wait_s=0.2))
    with Receiver() as receiver, TestClient(app) as client:
        add_webhook(client, "demo", receiver)  # creates the project with its default rules
        collapse, control = (
            r.run_id
            for r in run_scenario(
                "dead_units",
                "http://testserver",
                http_client=client,
                steps=60,  # the collapse run's fc2 is dead by step 15
                log=lambda _: None,
            )
        )
        fired = client.get("/api/v1/alerts", params={"project": "demo"}).json()
        deadline = time.monotonic() + 10
        while sum(carried(receiver.delivered()).values()) < len(fired):
            assert time.monotonic() < deadline, (len(fired), receiver.arrivals)
            time.sleep(0.05)
        time.sleep(0.3)  # nothing more comes

    assert all(a.signature_error is None for a in receiver.arrivals)
    assert carried(receiver.arrivals) == Counter(e["id"] for e in fired)
    bodies = [
        b | {"alert": alert} for a in receiver.arrivals for b in [a.json()] for alert in b["alerts"]
    ]
    dead = [
        b
        for b in bodies
        if b["alert"]["rule"] and b["alert"]["rule"]["name"] == "default: dead_fraction"
    ]
    assert [(b["type"], b["run"]["id"], b["alert"]["probe"], b["severity"]) for b in dead] == [
        ("alert.firing", collapse, "fc2", "critical")
    ]
    assert dead[0]["alert"]["value"] > 0.5 and dead[0]["alert"]["threshold"] == 0.5
    # Which other default rules fire is the rule pack's business; the dead-unit rule must
    # stay quiet on the control.
    assert [b for b in dead if b["run"]["id"] == control] == []


def test_alerts_fired_while_the_receiver_was_down_go_out_after_a_server_restart(
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path}/cw.db"
    receiver = Receiver().up()  # to learn a port; down until the second server runs
    receiver.down()
    first = start_server(db_url, log=tmp_path / "first.log", env=FAST_ENV)
    try:
        with httpx.Client(base_url=first.url, timeout=10) as http:
            wid = add_webhook(http, "svc", receiver)
            assert http.post("/api/v1/projects/svc/rules", json=RULE).status_code == 201
            batch = scalar_batch(uuid.uuid4(), [0.1, 0.9, 0.2, 0.8], probe="latency", project="svc")
            assert http.post("/api/v1/ingest", json=batch).status_code == 202
            fired = http.get("/api/v1/alerts", params={"project": "svc"}).json()
            assert sorted(e["status"] for e in fired) == ["firing", "firing", "resolved"]
            deadline = time.monotonic() + 10
            while True:  # the first server tries, and fails, to reach the receiver
                log = http.get(f"/api/v1/projects/svc/webhooks/{wid}/deliveries").json()
                # the two firings go out together, the resolution on its own
                if len(log) == 2 and all(d["attempts"] >= 1 for d in log):
                    break
                assert time.monotonic() < deadline, log
                time.sleep(0.05)
    finally:
        first.stop()
    assert all(d["status"] in ("pending", "delivering") for d in log)

    receiver.up()
    second = start_server(db_url, log=tmp_path / "second.log", env=FAST_ENV)
    try:
        receiver.wait_for(2)
        time.sleep(0.3)
        log = httpx.get(f"{second.url}/api/v1/projects/svc/webhooks/{wid}/deliveries").json()
    finally:
        second.stop()
        receiver.down()
    assert carried(receiver.arrivals) == Counter(e["id"] for e in fired)
    assert all(a.signature_error is None for a in receiver.arrivals)
    assert sorted(a.json()["type"] for a in receiver.arrivals) == [
        "alert.firing",
        "alert.resolved",
    ]
    assert all(d["status"] == "delivered" for d in log)
    assert all(a["error"].startswith("ConnectError") for d in log for a in d["log"][:-1])


@pytest.mark.postgres
def test_two_server_processes_on_one_postgres_send_each_delivery_once(
    pg_url: str, tmp_path: Path
) -> None:
    count = 200
    servers = [
        start_server(
            pg_url,
            log=tmp_path / f"{name}.log",
            env=FAST_ENV
            | {
                # the payload's dashboard URL tells the receiver which process sent it
                "COLLAPSEWATCH_PUBLIC_URL": f"http://{name}.invalid",
                "COLLAPSEWATCH_WEBHOOK_CONCURRENCY": "4",
            },
        )
        for name in ("server-a", "server-b")
    ]
    engine = make_engine(pg_url)
    # every answer takes 10 ms: one process alone could not drain the outbox before the other
    # polls, so both claim from it at once
    with Receiver(*[Answer(200, delay_s=0.01)] * count) as receiver:
        try:
            with httpx.Client(base_url=servers[0].url) as http:
                add_webhook(http, "fleet", receiver)
            # the outbox fills in one transaction, as after a burst of alerts
            settings = Settings(db_url=pg_url, notify_group_wait_s=0)
            events = put_events(
                ServiceContext(Database(engine), settings), "fleet", count, one_run=False
            )
            receiver.wait_for(count, timeout=60)
            time.sleep(0.5)  # nothing more comes
        finally:
            for server in servers:
                server.stop()
            engine.dispose()
    received = carried(receiver.arrivals)
    assert sorted(received) == sorted(events)
    assert set(received.values()) == {1}, [i for i, n in received.items() if n > 1]
    assert len({a.id for a in receiver.arrivals}) == count
    assert all(a.signature_error is None for a in receiver.arrivals)
    senders = Counter(a.json()["url"].split("/runs/")[0] for a in receiver.arrivals)
    assert set(senders) == {"http://server-a.invalid", "http://server-b.invalid"}, senders
