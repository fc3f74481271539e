"""Deleting a run: gone from every table, page and listing; another run untouched."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from collapsewatch_server import create_app
from collapsewatch_server.config import Settings
from collapsewatch_server.tables import Base
from tests.helpers import add_half_dead_rule, make_batch
from tests.server.test_read_api import ingest


def row_counts(app: Any) -> dict[str, int]:
    """Rows of every table of the schema."""
    with app.state.context.db.read() as s:
        return {
            t.name: s.scalar(select(func.count()).select_from(t)) or 0
            for t in Base.metadata.sorted_tables
        }


def test_a_deleted_run_is_gone_from_every_table_and_page(app: Any, client: Any) -> None:
    kept = make_batch(name="kept-run", steps=range(6))
    ingest(client, kept)
    add_half_dead_rule(client)
    # a receiver that never answers: the doomed run's alerts wait in notifications (group wait)
    hook = client.post("/api/v1/projects/proj/webhooks", json={"url": "http://127.0.0.1:9/h"})
    assert hook.status_code == 201, hook.text
    before = row_counts(app)
    doomed_id = str(uuid.uuid4())
    first = make_batch(doomed_id, name="doomed-run", steps=range(6))
    first["run"]["tags"] = ["doomed"]
    ingest(client, first)
    ingest(client, make_batch(doomed_id, name="doomed-run", steps=range(6, 12)))
    grown = row_counts(app)
    # the doomed run left rows in the tables that hold runs' data (alerts fired on fc2)
    tables = (
        *("runs", "run_tags", "probes", "series", "points", "stat_records", "alert_events"),
        *("deliveries", "delivery_events"),
    )
    for table in tables:
        assert grown[table] > before[table], table
    assert "doomed-run" in client.get("/alerts").text

    r = client.delete(f"/api/v1/runs/{doomed_id}")
    assert r.status_code == 204, r.text
    assert row_counts(app) == before
    assert client.get(f"/api/v1/runs/{doomed_id}").status_code == 404
    assert client.get(f"/api/v1/runs/{doomed_id}/series").status_code == 404
    assert client.get(f"/runs/{doomed_id}").status_code == 404
    assert [run["name"] for run in client.get("/api/v1/runs").json()] == ["kept-run"]
    assert client.get("/api/v1/alerts", params={"run_id": doomed_id}).status_code == 404
    for page in ("/", "/alerts", "/alerts?project=proj", f"/compare?runs={kept['run']['run_id']}"):
        assert "doomed-run" not in client.get(page).text, page
    assert client.delete(f"/api/v1/runs/{doomed_id}").status_code == 404
    assert client.get(f"/api/v1/runs/{kept['run']['run_id']}/series").json()


def test_deleting_needs_the_admin_token(sqlite_url: str) -> None:
    with TestClient(create_app(Settings(db_url=sqlite_url, admin_token="s3cret-admin"))) as c:
        batch = make_batch()
        admin = {"Authorization": "Bearer s3cret-admin"}
        r = c.post("/api/v1/ingest", json=batch, headers=admin)
        assert r.status_code == 202, r.text
        url = f"/api/v1/runs/{batch['run']['run_id']}"
        assert c.delete(url).status_code == 401
        assert c.delete(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get(url, headers=admin).status_code == 200
        assert c.delete(url, headers=admin).status_code == 204
        assert c.get(url, headers=admin).status_code == 404
