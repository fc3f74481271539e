"""``GET /metrics``: Prometheus text that prometheus_client's own parser reads, counting what
the server did, and protected like the read API."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from collapsewatch_server import create_app
from collapsewatch_server.config import Settings
from tests.helpers import JSON, add_half_dead_rule, make_batch, scrape
from tests.server.test_webhook_delivery import FAST, add_hook, final, fire, settle
from tests.webhook_support import Receiver


def test_metrics_count_ingest_rejections_processing_and_queues(client: Any) -> None:
    start = scrape(client)
    assert start[("collapsewatch_outbox_depth", ())] == 0
    assert not any(name == "collapsewatch_ingest_batches_total" for name, _ in start)
    batch = make_batch(steps=range(4))
    assert client.post("/api/v1/ingest", json=batch).status_code == 202
    add_half_dead_rule(client)
    later = make_batch(batch["run"]["run_id"], steps=range(4, 6))
    assert client.post("/api/v1/ingest", json=later).status_code == 202
    assert client.post("/api/v1/ingest", json=later).status_code == 202  # re-sent
    not_json = client.post("/api/v1/ingest", content=b"{not json", headers=JSON)
    assert not_json.status_code == 400
    assert client.post("/api/v1/ingest", json={"batch_id": "x"}).status_code == 422
    reused = {**later, "records": later["records"][:1]}
    assert client.post("/api/v1/ingest", json=reused).status_code == 409

    m = scrape(client)
    assert m[("collapsewatch_ingest_batches_total", (("outcome", "accepted"),))] == 2
    assert m[("collapsewatch_ingest_batches_total", (("outcome", "duplicate"),))] == 1
    records = len(batch["records"]) + len(later["records"])
    assert m[("collapsewatch_ingest_records_total", ())] == records
    assert m[("collapsewatch_ingest_bytes_total", ())] > 1000
    assert m[("collapsewatch_ingest_latency_seconds_count", ())] == 3
    for reason in ("bad_request", "invalid", "conflict"):
        assert m[("collapsewatch_ingest_rejected_total", (("reason", reason),))] == 1, reason
    points = client.get(f"/api/v1/runs/{batch['run']['run_id']}/series").json()
    assert m[("collapsewatch_points_stored_total", ())] == sum(s["points"] for s in points)
    # the new rule alone judged fc1 and fc2 at steps 4 and 5 (the default rules judged more),
    # and fired on fc2 (half its units dead)
    assert m[("collapsewatch_rule_evaluations_total", ())] >= 4
    firing = client.get("/api/v1/alerts", params={"state": "firing"}).json()
    assert "half dead" in {e["rule_name"] for e in firing}
    assert m[("collapsewatch_alert_events_total", (("status", "firing"),))] == len(firing)
    assert m[("collapsewatch_ingest_queue_batches", ())] == 0
    assert m[("collapsewatch_outbox_oldest_pending_age_seconds", ())] == 0
    assert ("collapsewatch_db_pool_size", ()) in m


def test_metrics_need_the_admin_token_once_one_is_set(sqlite_url: str) -> None:
    with TestClient(create_app(Settings(db_url=sqlite_url, admin_token="adm-tok"))) as c:
        assert c.get("/metrics").status_code == 401
        assert c.post("/api/v1/ingest", json=make_batch()).status_code == 401
        m = scrape(c, headers={"Authorization": "Bearer adm-tok"})
        assert m[("collapsewatch_ingest_rejected_total", (("reason", "unauthorized"),))] == 1


def test_metrics_count_deliveries_by_outcome(sqlite_url: str) -> None:
    with (
        TestClient(create_app(Settings(db_url=sqlite_url, **FAST))) as client,
        Receiver(500, 200) as receiver,  # the first attempt fails, the retry succeeds
    ):
        wid = add_hook(client, receiver)
        fire(client)
        settle(client, wid, final)
        m = scrape(client)
    assert m[("collapsewatch_webhook_deliveries_total", (("outcome", "pending"),))] == 1
    assert m[("collapsewatch_webhook_deliveries_total", (("outcome", "delivered"),))] == 1
    assert m[("collapsewatch_outbox_depth", ())] == 0
