"""The read API: runs, series, downsampled points, catalogue, errors."""

from __future__ import annotations

import gzip
import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from collapsewatch_server.indicators import CATALOGUE
from tests.helpers import activation_stats, make_batch


def ingest(client: Any, batch: dict[str, Any]) -> None:
    r = client.post(
        "/api/v1/ingest",
        content=gzip.compress(json.dumps(batch).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert r.status_code == 202, r.text


def test_healthz(client: Any) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["store"] == "ok"


def test_runs_newest_first_and_filtered_by_project(client: Any) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i, project in enumerate(["a", "b", "a"]):
        ingest(
            client, make_batch(project=project, name=f"r{i}", started_at=t0 + timedelta(hours=i))
        )
    names = [r["name"] for r in client.get("/api/v1/runs").json()]
    assert names == ["r2", "r1", "r0"]
    only_a = client.get("/api/v1/runs", params={"project": "a"}).json()
    assert [r["name"] for r in only_a] == ["r2", "r0"]
    projects = client.get("/api/v1/projects").json()
    assert [(p["name"], p["runs"]) for p in projects] == [("a", 2), ("b", 1)]


def test_unknowns_are_404(client: Any) -> None:
    missing = uuid.uuid4()
    assert client.get(f"/api/v1/runs/{missing}").status_code == 404
    assert client.get(f"/api/v1/runs/{missing}/series").status_code == 404
    assert client.get("/api/v1/runs", params={"project": "nope"}).status_code == 404
    batch = make_batch()
    ingest(client, batch)
    r = client.get(
        f"/api/v1/runs/{batch['run']['run_id']}/series/dead_fraction", params={"probe": "nope"}
    )
    assert r.status_code == 404
    assert "nope" in r.json()["detail"]
    assert client.get("/api/v1/runs/not-a-uuid").status_code == 422


def test_series_lists_each_indicator_per_probe(client: Any) -> None:
    batch = make_batch(steps=range(4))
    ingest(client, batch)
    series = client.get(f"/api/v1/runs/{batch['run']['run_id']}/series").json()
    dead = {s["probe"]: s for s in series if s["indicator"] == "dead_fraction"}
    assert set(dead) == {"fc1", "fc2"}
    assert dead["fc1"]["points"] == 4
    assert dead["fc1"]["last_step"] == 3
    assert dead["fc2"]["last_value"] == 0.5  # 2 of 4 units dead


def test_downsampling_keeps_the_spike(client: Any) -> None:
    run_id = uuid.uuid4()
    batch = make_batch(run_id, steps=range(0), probes=("fc1",))
    spike_step = 737
    batch["records"] = [
        {
            "probe": "fc1",
            "kind": "activation",
            "step": s,
            # dead_fraction is windowed over 5 records: the spike lasts 5 steps, ending here
            "stats": activation_stats(width=10, dead=9 if 0 <= spike_step - s < 5 else 1),
        }
        for s in range(1000)
    ]
    ingest(client, batch)
    pts = client.get(
        f"/api/v1/runs/{run_id}/series/dead_fraction",
        params={"probe": "fc1", "max_points": 50},
    ).json()
    assert pts["total"] == 1000
    assert pts["downsampled"] is True
    assert len(pts["steps"]) <= 50
    assert spike_step in pts["steps"]
    assert math.isclose(max(pts["values"]), 0.9)
    assert pts["steps"] == sorted(pts["steps"])


def test_max_points_is_validated(client: Any) -> None:
    batch = make_batch()
    ingest(client, batch)
    r = client.get(
        f"/api/v1/runs/{batch['run']['run_id']}/series/dead_fraction",
        params={"probe": "fc1", "max_points": 1},
    )
    assert r.status_code == 422


def test_indicator_catalogue(client: Any) -> None:
    catalogue = {i["name"]: i for i in client.get("/api/v1/indicators").json()}
    assert set(catalogue) == set(CATALOGUE)
    dead = catalogue["dead_fraction"]
    assert dead["direction"] == "high_is_bad"
    assert (dead["warn"], dead["critical"]) == (0.2, 0.5)
    assert all(i["meaning"] and i["what_to_try"] for i in catalogue.values())


def test_large_responses_are_gzipped(client: Any) -> None:
    batch = make_batch(steps=range(400), probes=("fc1",))
    ingest(client, batch)
    url = f"/api/v1/runs/{batch['run']['run_id']}/series/dead_fraction"
    r = client.get(url, params={"probe": "fc1"}, headers={"accept-encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers.get("content-encoding") == "gzip"
    assert len(r.json()["steps"]) == 400  # httpx decodes it transparently


def test_a_run_says_what_it_is_watched_for_and_how_it_was_sampled(client: Any) -> None:
    run_id = str(uuid.uuid4())
    coverage = {
        "dead_units": {"watched": True, "detail": "2 layers before a ReLU"},
        "attention": {"watched": False, "detail": "call monitor.log_attention(name, probs)"},
    }
    for steps, every in ((range(0, 16, 8), 8), (range(256, 288, 16), 16), (range(16, 24, 8), 8)):
        batch = make_batch(run_id, steps=steps)
        batch["run"].update(coverage=coverage, sampling_every=every)
        assert client.post("/api/v1/ingest", json=batch).status_code == 202
    run = client.get(f"/api/v1/runs/{run_id}").json()
    assert run["coverage"] == coverage
    # a late batch (a spool synced afterwards) does not add an interval that did not change
    assert run["sampling"] == [{"step": 0, "every": 8}, {"step": 256, "every": 16}]
    page = client.get(f"/runs/{run_id}").text
    assert "every 8, 16 from step 256" in page
    assert "not watched; call monitor.log_attention(name, probs)" in page
    assert "Watched for 1 of 2 collapse families" in page
