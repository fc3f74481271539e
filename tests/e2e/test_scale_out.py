"""Several server processes on one Postgres, each taking ingest, reads, processing and webhook
deliveries: every batch is stored once, every alert is delivered exactly once."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.alert_helpers import scalar_batch
from tests.e2e.conftest import LiveServer, start_server
from tests.helpers import JSON
from tests.webhook_support import Receiver

pytestmark = pytest.mark.postgres

PROCESSES = 3
RUNS = 6
BATCHES = 8  # per run; alternately above and below the rule's threshold
STEPS = 25  # per batch
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
            started.append(start_server(pg_url, log=tmp_path / f"server-{i}.log"))
        yield started
    finally:
        for server in started:
            server.stop()


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
        arrivals = receiver.wait_for(RUNS * BATCHES, timeout=120)
        ids = Counter(a.id for a in arrivals)
        assert [i for i, n in ids.items() if n > 1] == [], "a webhook was delivered twice"
        per_run = Counter(a.json()["run"]["id"] for a in arrivals)
        assert per_run == {str(r): BATCHES for r in runs}
        statuses = [a.json()["status"] for a in arrivals if a.json()["run"]["id"] == str(runs[0])]
        assert sorted(statuses) == sorted(["firing", "resolved"] * (BATCHES // 2))
        assert all(a.signature_error is None for a in arrivals)

    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        stored = dict(conn.execute("SELECT run_id, count(*) FROM stat_records GROUP BY run_id"))
        queued = conn.execute("SELECT count(*) FROM ingest_queue").fetchone()
        sent = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM deliveries WHERE status = 'delivered'"
        ).fetchone()
    assert stored == {str(r): BATCHES * STEPS for r in runs}, "no batch lost, none twice"
    assert queued == (0,)
    assert sent == (RUNS * BATCHES, RUNS * BATCHES)
    for server in servers:  # every process reads what the others stored
        (series,) = httpx.get(f"{server.url}/api/v1/runs/{runs[0]}/series").json()
        assert (series["points"], series["last_step"]) == (BATCHES * STEPS, BATCHES * STEPS - 1)
