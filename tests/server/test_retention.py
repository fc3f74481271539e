"""Retention of raw statistics: records older than the horizon go in bounded batches, the
indicator points stay, and the readers of raw records say why they are missing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from collapsewatch_server import create_app, errors
from collapsewatch_server.config import Settings
from collapsewatch_server.services import retention
from collapsewatch_server.tables import Point, StatRecordRow, utcnow
from tests.helpers import make_batch


def count(app: Any, table: Any) -> int:
    with app.state.context.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def test_old_raw_records_go_in_batches_and_points_stay(db_url: str) -> None:
    settings = Settings(db_url=db_url, raw_retention_days=7, raw_retention_batch=5, worker=False)
    app = create_app(settings)
    with TestClient(app) as client:
        old = make_batch(steps=range(0, 4))
        assert client.post("/api/v1/ingest", json=old).status_code == 202
        run_id = old["run"]["run_id"]
        ctx = app.state.context
        old_records = count(app, StatRecordRow)
        assert old_records == 12  # 4 steps x (fc1, fc2, loss)
        with ctx.db.write() as s:  # those arrived ten days ago
            s.execute(update(StatRecordRow).values(received_at=utcnow() - timedelta(days=10)))
        new = make_batch(run_id, steps=range(4, 6))
        assert client.post("/api/v1/ingest", json=new).status_code == 202
        points_before = count(app, Point)
        spectrum = {"probe": "fc1", "step": 1, "against": 1}
        assert client.get(f"/api/v1/runs/{run_id}/spectrum", params=spectrum).status_code == 200

        assert retention.prune_raw(ctx, utcnow()) == old_records  # 3 batches: 5 + 5 + 2
        assert count(app, StatRecordRow) == 6
        assert count(app, Point) == points_before
        assert retention.prune_raw(ctx, utcnow()) == 0

        # the points still chart and back-test; the spectrum at an old step names the policy
        assert client.get(f"/api/v1/runs/{run_id}/series").json()
        r = client.get(f"/api/v1/runs/{run_id}/spectrum", params={**spectrum, "step": 1})
        assert r.status_code == 200  # the step nearest after it is still there
        with ctx.db.write() as s:
            s.execute(update(StatRecordRow).values(received_at=utcnow() - timedelta(days=10)))
        retention.prune_raw(ctx, utcnow())
        r = client.get(f"/api/v1/runs/{run_id}/spectrum", params=spectrum)
        assert r.status_code == 404
        assert "COLLAPSEWATCH_RAW_RETENTION_DAYS" in r.json()["detail"]
        body = {
            "run_id": run_id,
            "rule": {
                "name": "x",
                "indicator": "dead_fraction",
                "condition": "above",
                "threshold": 0.3,
            },
        }
        r = client.post("/api/v1/projects/proj/rules/backtest", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["points_judged"] > 0
        assert r.json()["note"] == errors.RAW_RETENTION_NOTE.format(days=7)
        metrics = client.get("/metrics").text
        assert "collapsewatch_raw_records_pruned_total 18.0" in metrics


def test_no_retention_keeps_everything(client: Any) -> None:
    batch = make_batch()
    assert client.post("/api/v1/ingest", json=batch).status_code == 202
    assert retention.prune_raw(client.app.state.context, utcnow() + timedelta(days=3650)) == 0
