"""Grouped notifications end to end: a collapse across 24 layers of one run, ingested in two
batches through the real app, reaches each real receiver as one notification (and its
recovery as one resolution), instead of one webhook per layer and rule."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

from fastapi.testclient import TestClient

from collapsewatch_server import create_app
from collapsewatch_server.config import Settings
from tests.alert_helpers import dead_units_batch
from tests.webhook_support import Arrival, Receiver

LAYERS = [f"block{i:02d}" for i in range(24)]
COLLAPSED = [9] * 8  # 9 of 10 units dead for 8 steps
RECOVERED = [0] * 8


def add_webhook(client: TestClient, project: str, receiver: Receiver, **fields: Any) -> int:
    r = client.post(f"/api/v1/projects/{project}/webhooks", json={"url": receiver.url, **fields})
    assert r.status_code == 201, r.text
    receiver.secret = r.json()["secret"]
    return int(r.json()["id"])


def ingest(
    client: TestClient, run: uuid.UUID, layers: list[str], counts: list[int], start: int
) -> None:
    batch = dead_units_batch(
        run, {layer: counts for layer in layers}, start=start, project="deep", name="vit-24"
    )
    assert client.post("/api/v1/ingest", json=batch).status_code == 202


def wait_for_events(receiver: Receiver, count: int, timeout: float = 15.0) -> list[Arrival]:
    deadline = time.monotonic() + timeout
    while sum(len(a.json()["alerts"]) for a in receiver.delivered()) < count:
        assert time.monotonic() < deadline, [a.json()["title"] for a in receiver.arrivals]
        time.sleep(0.05)
    return receiver.delivered()


def test_a_collapse_across_24_layers_is_one_notification_per_receiver_and_one_resolution(
    sqlite_url: str,
) -> None:
    settings = Settings(db_url=sqlite_url, worker_poll_s=0.1, notify_group_wait_s=1.0)
    run = uuid.uuid4()
    with Receiver() as generic, Receiver() as slack, TestClient(create_app(settings)) as client:
        add_webhook(client, "deep", generic)
        add_webhook(client, "deep", slack, format="slack")
        # two batches, half the layers each: the group wait gathers both
        ingest(client, run, LAYERS[:12], COLLAPSED, start=0)
        ingest(client, run, LAYERS[12:], COLLAPSED, start=0)
        firing = client.get("/api/v1/alerts", params={"run_id": str(run)}).json()
        wait_for_events(generic, len(firing))
        ingest(client, run, LAYERS, RECOVERED, start=8)
        events = client.get("/api/v1/alerts", params={"run_id": str(run)}).json()
        arrivals = wait_for_events(generic, len(events))
        while len(slack.delivered()) < len(arrivals):
            time.sleep(0.05)
        time.sleep(0.5)  # nothing more comes

    assert all(a.signature_error is None for a in generic.arrivals + slack.arrivals)
    dead = [e for e in events if e["rule_name"] == "default: dead_fraction"]
    assert Counter(e["status"] for e in dead) == {"firing": 24, "resolved": 24}
    bodies = [a.json() for a in arrivals]
    dead_bodies = [b for b in bodies if b["family"] == "dead_units"]
    assert [b["type"] for b in dead_bodies] == ["alert.firing", "alert.resolved"]
    fired, resolved = dead_bodies
    assert {
        a["probe"] for a in fired["alerts"] if a["rule"]["name"] == "default: dead_fraction"
    } == set(LAYERS)
    assert fired["title"].startswith("🔴 Dead units: 24 layers of run vit-24 critical since step")
    assert resolved["title"] == "✅ Resolved: Dead units on 24 layers of run vit-24"
    # every event exactly once, in as many notifications as (status, family) pairs
    assert Counter(a["event_id"] for b in bodies for a in b["alerts"]) == Counter(
        e["id"] for e in events
    )
    groups = {(b["status"], b["family"]) for b in bodies}
    assert len(bodies) == len(groups) < len(events) / 10
    slack_titles = sorted(a.json()["blocks"][0]["text"]["text"] for a in slack.delivered())
    assert slack_titles == sorted(b["title"] for b in bodies)
