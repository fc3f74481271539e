"""Rules evaluated as points arrive through ingest, on SQLite and Postgres: pending, firing,
resolving, restarts, the alerts API, and nodata events for stalled runs."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from collapsewatch_server import create_app
from collapsewatch_server.config import Settings
from collapsewatch_server.db import Database, make_engine, migrate
from collapsewatch_server.services import alerts as alert_reads
from collapsewatch_server.services.context import ServiceContext
from collapsewatch_server.services.ingest import ingest_batch
from collapsewatch_server.tables import Delivery, Project, Webhook, utcnow
from collapsewatch_web.api_schemas.alerts import EventStatus
from tests.alert_helpers import dead_units_batch, scalar_batch, value_rule
from tests.helpers import JSON

RULES = "/api/v1/projects/proj/rules"


def wire(batch: dict[str, Any]) -> bytes:
    """A batch as the SDK sends it."""
    return json.dumps(batch).encode()


def ingest(client: Any, batch: dict[str, Any]) -> None:
    r = client.post("/api/v1/ingest", json=batch)
    assert r.status_code == 202, r.text


def alerts(client: Any, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/api/v1/alerts", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def setup_rule(client: Any, project: str = "proj", **fields: Any) -> dict[str, Any]:
    ingest(client, scalar_batch(uuid.uuid4(), [0.0], project=project, name="setup"))
    r = client.post(f"/api/v1/projects/{project}/rules", json=value_rule(**fields))
    assert r.status_code == 201, r.text
    return r.json()


def test_pending_fire_and_resolve_through_ingest(client: Any) -> None:
    rule = setup_rule(client)
    run = uuid.uuid4()
    ingest(client, scalar_batch(run, [0.1, 0.9, 0.9]))  # 2 breaching points of 3
    assert alerts(client, run_id=run) == []
    (state,) = client.get(f"/api/v1/runs/{run}/alerts").json()
    assert (state["rule_name"], state["probe"], state["state"]) == (
        "metric high",
        "metric",
        "pending",
    )
    assert client.get(f"/api/v1/runs/{run}").json()["open_alerts"] == 0

    ingest(client, scalar_batch(run, [0.77, 0.9, 0.95], start=3))  # the 3rd point fires, once
    (fired,) = alerts(client, run_id=run)
    assert fired["status"] == "firing" and fired["reminder"] is False
    assert (fired["rule_id"], fired["rule_name"], fired["indicator"]) == (
        rule["id"],
        "metric high",
        "value",
    )
    assert (fired["probe"], fired["value"], fired["threshold"], fired["step"]) == (
        "metric",
        0.77,
        0.5,
        3,
    )
    assert (fired["project"], fired["run_name"], fired["severity"]) == ("proj", "run-a", "warning")
    assert fired["message"] == "value on metric is 0.77, above 0.5 for 3 points"
    assert fired["url"] == f"http://127.0.0.1:8420/runs/{run}?step=3"
    assert client.get(f"/api/v1/runs/{run}").json()["open_alerts"] == 1
    runs = {r["run_id"]: r for r in client.get("/api/v1/runs").json()}
    assert runs[str(run)]["open_alerts"] == 1

    ingest(client, scalar_batch(run, [0.2, 0.1], start=6))
    resolved, firing = alerts(client, run_id=run)  # newest first
    assert firing == fired
    assert (resolved["status"], resolved["step"], resolved["value"]) == ("resolved", 6, 0.2)
    assert resolved["message"] == "value on metric is 0.2, back below 0.5"
    assert client.get(f"/api/v1/runs/{run}").json()["open_alerts"] == 0
    assert client.get(f"/api/v1/runs/{run}/alerts").json()[0]["state"] == "resolved"


def test_fire_and_resolve_in_one_batch_are_ordered_by_step(client: Any) -> None:
    setup_rule(client, pending_points=None)
    run = uuid.uuid4()
    ingest(client, scalar_batch(run, [0.9, 0.1, 0.9]))
    assert [(a["status"], a["step"]) for a in alerts(client, run_id=run)] == [
        ("firing", 2),
        ("resolved", 1),
        ("firing", 0),
    ]


def test_default_dead_fraction_rule_fires_on_the_dying_layer_only(client: Any) -> None:
    run = uuid.uuid4()
    # fc2 dies (8 of 10 units) from the second step on; fc1 keeps its units. dead_fraction
    # is windowed over the steps before it: 0.8 from step 5 (window 1-5), firing at the third
    # breaching point.
    ingest(client, dead_units_batch(run, {"fc1": [0] * 8, "fc2": [0] + [8] * 7}))
    (event,) = alerts(client, run_id=run)
    assert (event["rule_name"], event["probe"], event["step"], event["severity"]) == (
        "default: dead_fraction",
        "fc2",
        7,
        "critical",
    )
    assert event["message"] == "dead_fraction on fc2 is 0.8, above 0.5 for 3 points"
    states = {
        (s["rule_name"], s["probe"]): s["state"]
        for s in client.get(f"/api/v1/runs/{run}/alerts").json()
    }
    assert states[("default: dead_fraction", "fc2")] == "firing"
    assert states[("default: dead_fraction", "fc1")] == "normal"

    # disabled, the default rule stays quiet, and its open alert no longer counts
    rule_id = event["rule_id"]
    client.post(f"{RULES}/{rule_id}/disable", headers=JSON)
    assert client.get(f"/api/v1/runs/{run}").json()["open_alerts"] == 0
    other = uuid.uuid4()
    ingest(client, dead_units_batch(other, {"fc2": [9] * 5}, name="run-b"))
    assert alerts(client, run_id=other) == []


def test_globs_select_probes_and_runs(client: Any) -> None:
    setup_rule(client, pending_points=None, probe="layer.*", run="exp-*")
    hit, other_probe, other_run = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ingest(client, scalar_batch(hit, [0.9], probe="layer.1", name="exp-7"))
    ingest(client, scalar_batch(other_probe, [0.9], probe="head", name="exp-8"))
    ingest(client, scalar_batch(other_run, [0.9], probe="layer.1", name="baseline"))
    assert [a["run_name"] for a in alerts(client)] == ["exp-7"]


def test_alert_state_survives_a_restart(settings: Settings) -> None:
    """Two points breaching, a new app (a restarted server) on the same database, a third
    point: the pending period counts across the restart and fires once."""
    run = uuid.uuid4()
    with TestClient(create_app(settings)) as first:
        setup_rule(first)
        ingest(first, scalar_batch(run, [0.9, 0.9]))
        assert alerts(first) == []
    first.app.state.context.db.engine.dispose()
    with TestClient(create_app(settings)) as second:
        ingest(second, scalar_batch(run, [0.9], start=2))
        assert [(a["status"], a["step"]) for a in alerts(second)] == [("firing", 2)]
        ingest(second, scalar_batch(run, [0.1], start=3))
        assert [(a["status"], a["step"]) for a in alerts(second)] == [
            ("resolved", 3),
            ("firing", 2),
        ]
        second.app.state.context.db.engine.dispose()


def test_alerts_api_filters(client: Any) -> None:
    setup_rule(client, pending_points=None)
    setup_rule(client, project="other", pending_points=None, severity="critical")
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    ingest(client, scalar_batch(a, [0.9, 0.1]))
    ingest(client, scalar_batch(b, [0.9], name="run-b"))
    ingest(client, scalar_batch(c, [0.9], project="other", name="run-c"))

    assert len(alerts(client)) == 4
    assert {x["run_name"] for x in alerts(client, project="proj")} == {"run-a", "run-b"}
    assert [x["status"] for x in alerts(client, run_id=a)] == ["resolved", "firing"]
    assert {x["run_name"] for x in alerts(client, state="firing")} == {"run-a", "run-b", "run-c"}
    assert [x["run_name"] for x in alerts(client, state="resolved")] == ["run-a"]
    assert alerts(client, state="nodata") == []
    assert [x["run_name"] for x in alerts(client, severity="critical")] == ["run-c"]
    assert len(alerts(client, project="proj", state="firing", severity="warning")) == 2
    assert len(alerts(client, limit=1)) == 1

    assert client.get("/api/v1/alerts", params={"state": "pending"}).status_code == 422
    assert client.get("/api/v1/alerts", params={"severity": "fatal"}).status_code == 422
    assert client.get("/api/v1/alerts", params={"limit": 0}).status_code == 422
    assert client.get("/api/v1/alerts", params={"project": "ghost"}).status_code == 404
    assert client.get("/api/v1/alerts", params={"run_id": str(uuid.uuid4())}).status_code == 404
    assert client.get(f"/api/v1/runs/{uuid.uuid4()}/alerts").status_code == 404


def test_events_go_to_the_outbox_with_the_points(client: Any, app: Any) -> None:
    """A firing and a resolved event each get a delivery to the project's webhook, written in
    the ingest transaction (the webhook row is put in directly: webhooks have their own API)."""
    setup_rule(client, pending_points=None)
    ctx: ServiceContext = app.state.context
    with Session(ctx.db.engine) as s, s.begin():
        project_id = s.scalar(select(Project.id).where(Project.name == "proj"))
        hook = Webhook(project_id=project_id, url="http://127.0.0.1:9/", secret="x" * 32)
        hook.severities = ["warning", "critical"]
        s.add(hook)
    ingest(client, scalar_batch(uuid.uuid4(), [0.9, 0.1]))
    with Session(ctx.db.engine) as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 2


# -------------------------------------------------------------------------------- nodata


@pytest.fixture
def contexts(db_url: str) -> Iterator[tuple[ServiceContext, ServiceContext]]:
    """Two service contexts on two engines: two server processes sharing one database."""
    engines = [make_engine(db_url), make_engine(db_url)]
    migrate(engines[0])
    settings = Settings(db_url=db_url, stalled_after_s=5)
    yield (
        ServiceContext(Database(engines[0]), settings),
        ServiceContext(Database(engines[1]), settings),
    )
    for engine in engines:
        engine.dispose()


def test_a_stalled_run_gets_one_nodata_event(
    contexts: tuple[ServiceContext, ServiceContext],
) -> None:
    one, two = contexts
    run = uuid.uuid4()
    ingest_batch(one, wire(scalar_batch(run, [0.1], start=41)))
    finished = uuid.uuid4()
    ingest_batch(
        one,
        wire(scalar_batch(finished, [0.1], name="done", status="finished")),
    )
    assert alert_reads.scan_stalled(one, utcnow()) == 0  # not silent for 5 s yet
    later = utcnow() + timedelta(seconds=30)
    assert alert_reads.scan_stalled(one, later) == 1
    assert alert_reads.scan_stalled(one, later) == 0  # told once
    # another process: nothing
    assert alert_reads.scan_stalled(two, later + timedelta(seconds=1)) == 0
    (event,) = alert_reads.list_alerts(two, state=EventStatus.nodata)
    assert (event.run_id, event.run_name, event.status.value, event.severity.value) == (
        run,
        "run-a",
        "nodata",
        "warning",
    )
    assert event.message.startswith("run run-a sent nothing for ") and event.message.endswith(" s")
    assert event.step == 41 and event.rule_id is None and event.url.endswith(f"{run}?step=41")

    # data again clears the claim: a new silence is a new event
    ingest_batch(one, wire(scalar_batch(run, [0.1], start=42)))
    assert alert_reads.scan_stalled(one, utcnow() + timedelta(seconds=30)) == 1
    assert len(alert_reads.list_alerts(one, run_id=run, state=EventStatus.nodata)) == 2


def test_two_processes_scanning_at_once_raise_nodata_once(
    contexts: tuple[ServiceContext, ServiceContext],
) -> None:
    one, two = contexts
    runs = [uuid.uuid4() for _ in range(3)]
    for i, run in enumerate(runs):
        ingest_batch(one, wire(scalar_batch(run, [0.1], name=f"r{i}")))
    later = utcnow() + timedelta(seconds=30)
    barrier = threading.Barrier(2)
    raised: list[int] = []

    def scan(ctx: ServiceContext) -> None:
        barrier.wait()
        raised.append(alert_reads.scan_stalled(ctx, later))

    threads = [threading.Thread(target=scan, args=(s,)) for s in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(raised) == 3
    nodata = alert_reads.list_alerts(one, state=EventStatus.nodata)
    assert sorted(e.run_name for e in nodata) == ["r0", "r1", "r2"]
