"""Scalar columns (``IngestBatch.scalars``): a run's scalars sent as one column per probe are
stored as blocks of points, and every read gives what the same values sent as ``scalar``
records give. Real app, SQLite file and Postgres."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from collapsewatch.schemas import COLUMN_VALUE_LOAD, MAX_COLUMN_VALUES, IngestBatch
from collapsewatch_server.config import Settings
from collapsewatch_server.db import Database, make_engine, migrate
from collapsewatch_server.services import runs as run_service
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.ingest import accept_batch
from collapsewatch_server.tables import Point, QueuedBatch, StatRecordRow
from tests.alert_helpers import value_rule
from tests.server.test_ingest import counts, post

NAN, INF = float("nan"), float("inf")


def _batch(
    run_id: str, *, records: list[Any] = (), scalars: list[Any] = (), **extra: Any
) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "batch_id": str(uuid.uuid4()),
        "run": {
            "run_id": run_id,
            "project": "proj",
            "name": "scalars",
            "started_at": datetime.now(UTC).isoformat(),
        },
        "records": list(records),
        "scalars": list(scalars),
        **extra,
    }


def _as_records(columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"probe": c["probe"], "kind": "scalar", "step": st, "stats": {"value": v}}
        for c in columns
        for st, v in zip(c["steps"], c["values"], strict=True)
    ]


COLUMNS = [
    {
        "probe": "lr",
        "steps": list(range(0, 300, 3)),
        "values": [1e-3 * (1 + i) for i in range(100)],
    },
    {"probe": "grad_norm", "steps": [0, 1, 2, 3, 4, 5], "values": [1.0, NAN, 2.0, INF, -1.5, 0.25]},
]


def _reads(client: Any, run_id: str) -> dict[str, Any]:
    """Everything a user reads of a run's scalars."""
    out: dict[str, Any] = {}
    for probe in ("lr", "grad_norm"):
        r = client.get(f"/api/v1/runs/{run_id}/series/value", params={"probe": probe})
        assert r.status_code == 200, r.text
        out[probe] = r.json()
    listing = client.get(f"/api/v1/runs/{run_id}/series").json()
    out["listing"] = sorted(map(str, listing))
    figure = client.get(f"/api/v1/runs/{run_id}/figures/value")
    assert figure.status_code == 200, figure.text
    out["heatmap"] = figure.json()["heatmap"]
    export = client.get(f"/api/v1/runs/{run_id}/export")
    assert export.status_code == 200, export.text
    out["csv"] = export.text
    return out


def test_columns_read_as_the_same_values_sent_as_records(client: Any, app: Any) -> None:
    as_columns, as_records = str(uuid.uuid4()), str(uuid.uuid4())
    r = post(client, _batch(as_columns, scalars=COLUMNS))
    assert r.status_code == 202, r.text
    assert r.json()["records"] == r.json()["points"] == 106
    r = post(client, _batch(as_records, records=_as_records(COLUMNS)))
    assert r.status_code == 202, r.text
    assert r.json()["points"] == 106

    columns, records = _reads(client, as_columns), _reads(client, as_records)
    assert columns == records
    assert columns["grad_norm"]["values"] == [1.0, None, 2.0, None, -1.5, 0.25]
    assert columns["lr"]["steps"] == list(range(0, 300, 3))
    run = client.get(f"/api/v1/runs/{as_columns}").json()
    assert run["last_step"] == 297
    assert {p["name"]: p["kind"] for p in run["probes"]} == {"lr": "scalar", "grad_norm": "scalar"}

    # stored as one row a column, and no raw record rows
    engine = app.state.context.db.engine
    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(Point).where(Point.packed.is_not(None)))
        raw = conn.scalar(
            select(func.count())
            .select_from(StatRecordRow)
            .where(StatRecordRow.run_id == as_columns)
        )
    assert (rows, raw) == (2, 0)


def test_a_repeated_step_keeps_the_first_value(client: Any) -> None:
    run_id = str(uuid.uuid4())
    first = {"probe": "loss_scale", "steps": [0, 1, 1, 2], "values": [1.0, 2.0, 99.0, 3.0]}
    assert post(client, _batch(run_id, scalars=[first])).json()["points"] == 3
    # a late batch reaching back into the block, as a column and as a record
    again = {"probe": "loss_scale", "steps": [2, 1, 3], "values": [-1.0, -1.0, 4.0]}
    assert post(client, _batch(run_id, scalars=[again])).json()["points"] == 1
    record = {"probe": "loss_scale", "kind": "scalar", "step": 1, "stats": {"value": -7.0}}
    late = {"probe": "loss_scale", "kind": "scalar", "step": 5, "stats": {"value": 5.0}}
    assert post(client, _batch(run_id, records=[record, late])).json()["points"] == 1
    fill = {"probe": "loss_scale", "steps": [4, 5, 6], "values": [4.5, -1.0, 6.0]}
    assert post(client, _batch(run_id, scalars=[fill])).json()["points"] == 2
    series = client.get(f"/api/v1/runs/{run_id}/series/value", params={"probe": "loss_scale"})
    assert series.json()["steps"] == [0, 1, 2, 3, 4, 5, 6]
    assert series.json()["values"] == [1.0, 2.0, 3.0, 4.0, 4.5, 5.0, 6.0]
    listing = client.get(f"/api/v1/runs/{run_id}/series").json()
    assert [(s["points"], s["last_step"], s["last_value"]) for s in listing] == [(7, 6, 6.0)]


def test_live_pages_get_a_blocks_points(client: Any, app: Any) -> None:
    run_id = str(uuid.uuid4())
    ctx = app.state.context
    cursor = run_service.latest_cursor(ctx)
    post(
        client,
        _batch(run_id, scalars=[{"probe": "lr", "steps": [0, 1, 2], "values": [0.1, NAN, 0.3]}]),
    )
    events, new_cursor = run_service.points_since(ctx, uuid.UUID(run_id), cursor)
    assert [(e.probe, e.step, e.value) for e in events] == [
        ("lr", 0, 0.1),
        ("lr", 1, None),
        ("lr", 2, 0.3),
    ]
    assert new_cursor > cursor
    assert run_service.points_since(ctx, uuid.UUID(run_id), new_cursor)[0] == []


def test_a_rule_on_a_scalar_fires_from_a_column(client: Any) -> None:
    rule = value_rule(probe="lr", pending_points=1)
    post(
        client, _batch(str(uuid.uuid4()), scalars=[{"probe": "lr", "steps": [0], "values": [0.1]}])
    )
    r = client.post("/api/v1/projects/proj/rules", json=rule)
    assert r.status_code == 201, r.text
    run_id = str(uuid.uuid4())
    column = {"probe": "lr", "steps": [0, 1, 2, 3], "values": [0.1, 0.2, 0.9, 0.95]}
    assert post(client, _batch(run_id, scalars=[column])).status_code == 202
    alerts = client.get("/api/v1/alerts", params={"run_id": run_id}).json()
    firing = [a for a in alerts if a["status"] == "firing"]
    assert len(firing) == 1, alerts
    assert (firing[0]["probe"], firing[0]["step"]) == ("lr", 2)


@pytest.mark.parametrize(
    ("column", "loc"),
    [
        ({"probe": "lr", "steps": [0, 1], "values": [0.1]}, ["scalars", 0]),
        ({"probe": "lr", "steps": [-1], "values": [0.1]}, ["scalars", 0, "steps", 0]),
        ({"probe": "lr", "steps": [0], "values": ["x"]}, ["scalars", 0, "values", 0]),
        ({"probe": "", "steps": [0], "values": [0.1]}, ["scalars", 0, "probe"]),
        ({"probe": "lr", "steps": [0], "values": [0.1], "kind": "scalar"}, ["scalars", 0, "kind"]),
    ],
)
def test_a_broken_column_is_422_and_stores_nothing(
    client: Any, app: Any, column: dict[str, Any], loc: list[Any]
) -> None:
    before = counts(app)
    r = post(client, _batch(str(uuid.uuid4()), scalars=[column]))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc, r.text
    assert counts(app) == before


def test_more_values_than_a_batch_takes_are_422(client: Any, app: Any) -> None:
    before = counts(app)
    half = MAX_COLUMN_VALUES // 2 + 1
    column = {"probe": "x", "steps": [0] * half, "values": [0.0] * half}
    r = post(client, _batch(str(uuid.uuid4()), scalars=[column, {**column, "probe": "y"}]))
    assert r.status_code == 422, r.text
    assert "at most" in r.text
    assert counts(app) == before


def test_the_queue_counts_a_columns_values_at_their_load(settings: Settings) -> None:
    """2,000 column values and 3 records wait as 23 records' worth of work: a deep queue (and
    a claim's size) is measured in what processing costs."""
    engine = make_engine(settings.db_url)
    migrate(engine)
    ctx = ServiceContext(Database(engine), settings)
    records = _as_records([{"probe": "r", "steps": [0, 1, 2], "values": [1.0, 2.0, 3.0]}])
    column = {"probe": "c", "steps": list(range(2000)), "values": [0.5] * 2000}
    body = json.dumps(_batch(str(uuid.uuid4()), records=records, scalars=[column])).encode()
    batch = IngestBatch.model_validate_json(body)
    assert (batch.size, batch.load) == (2003, 3 + math.ceil(2000 * COLUMN_VALUE_LOAD))
    result = accept_batch(ctx, batch, body).result
    assert result.records == 2003
    with ctx.db.read() as s:
        assert s.scalar(select(QueuedBatch.records)) == 23
    engine.dispose()
