"""Several server processes on one Postgres, each taking ingest, reads, processing and webhook
deliveries: every batch is stored once, every alert is delivered exactly once."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.alert_helpers import scalar_batch
from tests.e2e.conftest import LiveServer, start_server
from tests.helpers import JSON
from tests.webhook_support import Arrival, Receiver

pytestmark = pytest.mark.postgres

PROCESSES = 3
RUNS = 6
BATCHES = 8  # per run; alternately above and below the rule's threshold
STEPS = 25  # per batch
#: Each event as soon as it is raised (events of one group still share a notification when
#: they are raised before it is sent).
NO_WAIT = {"COLLAPSEWATCH_NOTIFY_GROUP_WAIT_S": "0", "COLLAPSEWATCH_NOTIFY_GROUP_INTERVAL_S": "0"}
RULE = {
    "name": "metric high",
    "indicator": "value",
    "probe": "metric",
    "condition": "above",
    "threshold": 0.5,
    "severity": "warning",
}


@pytest.fixture
def servers(pg_url: str, tmp_path: Path) -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    try:
        for i in range(PROCESSES):  # one after the other: the first migrates the schema
            started.append(start_server(pg_url, log=tmp_path / f"server-{i}.log", env=NO_WAIT))
        yield started
    finally:
        for server in started:
            server.stop()


def alerts_of(arrivals: list[Arrival]) -> list[dict[str, Any]]:
    """Every alert the notifications carried, with its run's id."""
    return [
        alert | {"run_id": doc["run"]["id"]}
        for doc in (a.json() for a in arrivals)
        for alert in doc["alerts"]
    ]


def send_run(servers: list[LiveServer], run: uuid.UUID, failures: list[str]) -> None:
    """A trainer whose batches reach the processes in turn (a round-robin proxy)."""
    with httpx.Client(timeout=30) as client:
        for b in range(BATCHES):
            value = 0.9 if b % 2 == 0 else 0.1
            batch = scalar_batch(run, [value] * STEPS, start=b * STEPS, name=f"run-{run.hex[:6]}")
            url = servers[(b + run.int) % len(servers)].url
            r = client.post(f"{url}/api/v1/ingest", content=json.dumps(batch), headers=JSON)
            if r.status_code != 202:
                failures.append(f"{r.status_code} {r.text}")


def test_processes_share_ingest_processing_and_deliveries(
    servers: list[LiveServer], pg_url: str
) -> None:
    with Receiver() as receiver:
        first = servers[0].url
        hook = httpx.post(f"{first}/api/v1/projects/proj/webhooks", json={"url": receiver.url})
        assert hook.status_code == 201, hook.text
        receiver.secret = hook.json()["secret"]
        assert httpx.post(f"{first}/api/v1/projects/proj/rules", json=RULE).status_code == 201

        runs = [uuid.uuid4() for _ in range(RUNS)]
        failures: list[str] = []
        threads = [threading.Thread(target=send_run, args=(servers, r, failures)) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []

        # every batch of a run alternates: one firing or resolved event each
        deadline = time.monotonic() + 120
        while len(alerts_of(receiver.delivered())) < RUNS * BATCHES:
            assert time.monotonic() < deadline, len(alerts_of(receiver.delivered()))
            time.sleep(0.1)
        arrivals = receiver.delivered()
        ids = Counter(a.id for a in arrivals)
        assert [i for i, n in ids.items() if n > 1] == [], "a webhook was delivered twice"
        alerts = alerts_of(arrivals)
        assert len({a["event_id"] for a in alerts}) == len(alerts), "an event was sent twice"
        per_run = Counter(a["run_id"] for a in alerts)
        assert per_run == {str(r): BATCHES for r in runs}
        statuses = [a["status"] for a in alerts if a["run_id"] == str(runs[0])]
        assert sorted(statuses) == sorted(["firing", "resolved"] * (BATCHES // 2))
        assert all(a.signature_error is None for a in arrivals)

    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        stored = dict(conn.execute("SELECT run_id, count(*) FROM stat_records GROUP BY run_id"))
        queued = conn.execute("SELECT count(*) FROM ingest_queue").fetchone()
        sent = conn.execute(
            "SELECT count(*), count(DISTINCT e.event_id) FROM delivery_events e "
            "JOIN deliveries d ON d.id = e.delivery_id WHERE d.status = 'delivered'"
        ).fetchone()
    assert stored == {str(r): BATCHES * STEPS for r in runs}, "no batch lost, none twice"
    assert queued == (0,)
    assert sent == (RUNS * BATCHES, RUNS * BATCHES)
    for server in servers:  # every process reads what the others stored
        (series,) = httpx.get(f"{server.url}/api/v1/runs/{runs[0]}/series").json()
        assert (series["points"], series["last_step"]) == (BATCHES * STEPS, BATCHES * STEPS - 1)
