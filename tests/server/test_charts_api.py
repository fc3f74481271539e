"""The dashboards' JSON endpoints through the real app on a SQLite file: figures per indicator,
spectra, health, runs overview, comparison, rule back-test and ingest tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collapsewatch_server import errors
from collapsewatch_server.api.charts import COMPARE_TOO_MANY, MAX_COMPARED
from collapsewatch_server.api.live import ALERT_OVERLAP, _AlertCursor
from collapsewatch_server.app import create_app
from collapsewatch_server.config import Settings
from collapsewatch_web.api_schemas.alerts import AlertEventPublic, EventStatus, Severity
from tests.helpers import JSON, activation_stats, make_batch


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(db_url=f"sqlite:///{tmp_path}/cw.db", worker=False)
    with TestClient(create_app(settings)) as c:
        yield c


def ingest(client: TestClient, batch: dict[str, Any]) -> str:
    r = client.post("/api/v1/ingest", json=batch)
    assert r.status_code == 202, r.text
    return str(batch["run"]["run_id"])


def collapsed_run(client: TestClient, **kw: Any) -> str:
    """fc1 (1 of 4 units dead), fc2 (2) and fc3 (3: past the default critical 0.5)."""
    return ingest(client, make_batch(steps=range(10), probes=("fc1", "fc2", "fc3"), **kw))


def test_figures_draw_every_probe_in_model_order_with_rule_lines_and_alert_markers(
    client: TestClient,
) -> None:
    run_id = collapsed_run(client)
    body = client.get(f"/api/v1/runs/{run_id}/figures/dead_fraction").json()
    lines = body["lines"]["data"]
    assert [t["name"] for t in lines] == ["fc1", "fc2", "fc3", "alerts"]
    assert lines[0]["x"] == list(range(10))
    assert lines[2]["y"] == [0.75] * 10
    # the default rule fired on fc3 after 3 breaching points: a marker there
    alerts = lines[3]
    assert alerts["uid"] == "alerts"
    assert alerts["x"] == [2]
    assert alerts["y"] == [0.75]
    assert [(t["label"], t["value"], t["source"]) for t in body["thresholds"]] == [
        ("default: dead_fraction", 0.5, "rule")
    ]
    shapes = body["lines"]["layout"]["shapes"]
    assert [s["y0"] for s in shapes] == [0.5]
    assert body["latest"][0]["probe"] == "fc3", "worst first"
    assert body["latest"][0]["judgement"] == "critical"
    assert body["total"] == 30
    heat = body["heatmap"]["data"][0]
    assert heat["type"] == "heatmap"
    assert heat["y"] == ["fc1", "fc2", "fc3"]
    assert heat["z"][2] == [0.75] * 10
    assert body["heatmap"]["layout"]["yaxis"]["autorange"] == "reversed"


def test_threshold_lines_follow_the_enabled_rules(client: TestClient) -> None:
    run_id = collapsed_run(client)
    rule = {"name": "half dead early", "indicator": "dead_fraction", "condition": "above"}
    r = client.post("/api/v1/projects/proj/rules", json={**rule, "threshold": 0.3})
    assert r.status_code == 201, r.text
    default = next(
        x["id"]
        for x in client.get("/api/v1/projects/proj/rules").json()
        if x["is_default"]
        if x["indicator"] == "dead_fraction"
    )
    client.post(f"/api/v1/projects/proj/rules/{default}/disable", headers=JSON)
    body = client.get(f"/api/v1/runs/{run_id}/figures/dead_fraction").json()
    assert [(t["label"], t["value"]) for t in body["thresholds"]] == [("half dead early", 0.3)]
    judged = {v["probe"]: v["judgement"] for v in body["latest"]}
    assert judged == {"fc1": "ok", "fc2": "warn", "fc3": "warn"}


def test_figures_are_not_sent_again_until_what_they_draw_changes(client: TestClient) -> None:
    run_id = collapsed_run(client)
    url = f"/api/v1/runs/{run_id}/figures/dead_fraction"
    first = client.get(url)
    tag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"

    def again(tag: str, **params: int) -> Any:
        return client.get(url, params=params, headers={"if-none-match": f'"other", {tag}'})

    unchanged = again(tag)
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    assert unchanged.headers["etag"] == tag
    assert again(tag, max_points=40).status_code == 200, "another size is another body"

    # a later step, a rule's threshold, each makes new figures with a new tag
    ingest(client, make_batch(run_id, steps=range(10, 11), probes=("fc1", "fc2", "fc3")))
    grown = again(tag)
    assert grown.status_code == 200 and grown.headers["etag"] != tag
    assert grown.json()["total"] > first.json()["total"]
    tag = grown.headers["etag"]
    assert again(tag).status_code == 304
    rule = {"name": "stricter", "indicator": "dead_fraction", "condition": "above"}
    assert (
        client.post("/api/v1/projects/proj/rules", json={**rule, "threshold": 0.1}).status_code
        == 201
    )
    ruled = again(tag)
    assert ruled.status_code == 200 and ruled.headers["etag"] != tag
    assert ("stricter", 0.1) in [(x["label"], x["value"]) for x in ruled.json()["thresholds"]]


def test_figures_of_something_the_run_lacks_are_404(client: TestClient) -> None:
    run_id = collapsed_run(client)
    unknown = client.get(f"/api/v1/runs/{run_id}/figures/no_such_indicator")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == errors.UNKNOWN_INDICATOR.format(
        indicator="no_such_indicator"
    )
    absent = client.get(f"/api/v1/runs/{run_id}/figures/nc1")
    assert absent.status_code == 404
    assert absent.json()["detail"] == errors.INDICATOR_NOT_IN_RUN.format(
        indicator="nc1", run_id=run_id
    )
    assert client.get(f"/api/v1/runs/{uuid.uuid4()}/figures/loss").status_code == 404


def test_one_probe_has_no_heatmap_and_max_points_bounds_each_line(client: TestClient) -> None:
    run_id = ingest(client, make_batch(steps=range(100), probes=("fc1",)))
    body = client.get(f"/api/v1/runs/{run_id}/figures/loss", params={"max_points": 20}).json()
    assert body["heatmap"] is None
    assert len(body["lines"]["data"][0]["x"]) <= 20
    assert body["bin_width"] == 10
    # 1/(s+1) falls: each bin keeps its highest value, the first point stays exact
    assert body["lines"]["data"][0]["y"][0] == 1.0


def test_more_layers_than_colours_draw_lines_of_the_worst_and_a_heatmap_of_all(
    client: TestClient,
) -> None:
    layers = tuple(f"l{i}" for i in range(12))
    batch = make_batch(steps=range(5), probes=layers)
    for record in batch["records"]:
        if record["kind"] == "activation":  # l3, l7, l11 worst; l0, l4, l8 all alive
            record["stats"] = activation_stats(dead=int(record["probe"][1:]) % 4)
    run_id = ingest(client, batch)
    body = client.get(f"/api/v1/runs/{run_id}/figures/dead_fraction").json()
    drawn = [t["name"] for t in body["lines"]["data"] if t.get("uid") not in ("alerts",)]
    assert len(drawn) == 10, f"a line per palette colour, no more: {drawn}"
    assert drawn == sorted(drawn, key=layers.index), "in model order"
    assert set(layers) - set(drawn) < {"l0", "l4", "l8"}, "the two left out are alive"
    notes = [a["text"] for a in body["lines"]["layout"]["annotations"]]
    assert "the 10 worst of 12 layers; every layer in the heatmap" in notes
    assert body["heatmap"]["data"][0]["y"] == list(layers), "the heatmap has every layer"
    assert len(body["latest"]) == 12, "and the card's list"


def test_spectrum_beside_the_first_step(client: TestClient) -> None:
    run_id = collapsed_run(client)
    body = client.get(f"/api/v1/runs/{run_id}/spectrum", params={"probe": "fc2", "step": 7}).json()
    assert [s["step"] for s in body["spectra"]] == [0, 7]
    assert [t["name"] for t in body["figure"]["data"]] == ["step 0", "step 7"]
    assert body["figure"]["layout"]["yaxis"]["type"] == "log"
    missing = client.get(f"/api/v1/runs/{run_id}/spectrum", params={"probe": "x", "step": 1})
    assert missing.status_code == 404


def test_health_by_family_and_the_runs_overview(client: TestClient) -> None:
    sick = collapsed_run(client, name="sick")
    healthy = ingest(client, make_batch(name="fine", probes=("fc1",)))
    health = client.get(f"/api/v1/runs/{sick}/health").json()
    families = {f["family"]: f for f in health["families"]}
    assert families["dead_units"]["state"] == "critical"
    assert families["dead_units"]["firing"] == 1
    assert families["training"]["state"] == "ok"
    assert health["open_alerts"] == 1
    assert [e["probe"] for e in health["recent"]] == ["fc3"]
    runs = client.get("/api/v1/overview", params={"project": "proj"}).json()
    assert [r["name"] for r in runs] == ["fine", "sick"], "newest first"
    by_id = {r["run_id"]: r for r in runs}
    assert by_id[healthy]["health"] == []
    assert [(h["family"], h["state"]) for h in by_id[sick]["health"]] == [
        ("dead_units", "critical")
    ]
    assert [r["name"] for r in client.get("/api/v1/overview", params={"q": "SIC"}).json()] == [
        "sick"
    ]
    assert client.get("/api/v1/overview", params={"project": "nope"}).status_code == 404
    firing = client.get("/api/v1/firing").json()
    assert [(f["run_name"], f["probe"]) for f in firing] == [("sick", "fc3")]


def test_compare_draws_a_line_per_run(client: TestClient) -> None:
    a = collapsed_run(client, name="lr-0.1")
    b = ingest(client, make_batch(name="lr-0.01", probes=("fc1", "fc2")))
    r = client.get(
        "/api/v1/compare",
        params={"runs": f"{a},{b},{a}", "indicator": "dead_fraction", "probe": "fc2"},
    )
    assert r.status_code == 200, r.text
    assert [t["name"] for t in r.json()["figure"]["data"]] == ["lr-0.1", "lr-0.01"]
    # a run without the probe is left out rather than failing the comparison
    only = client.get(
        "/api/v1/compare", params={"runs": f"{a},{b}", "indicator": "dead_fraction", "probe": "fc3"}
    ).json()
    assert [s["probe"] for s in only["series"]] == ["fc3"]
    bad = client.get(
        "/api/v1/compare", params={"runs": "x", "indicator": "dead_fraction", "probe": "fc1"}
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "runs"]
    many = ",".join(str(uuid.uuid4()) for _ in range(MAX_COMPARED + 1))
    too_many = client.get(
        "/api/v1/compare", params={"runs": many, "indicator": "loss", "probe": "loss"}
    )
    assert too_many.json()["detail"][0]["msg"] == COMPARE_TOO_MANY


def backtest(client: TestClient, run_id: str, project: str = "proj", **rule: Any) -> Any:
    body = {"run_id": run_id, "rule": {"name": "try", "indicator": "dead_fraction", **rule}}
    return client.post(f"/api/v1/projects/{project}/rules/backtest", json=body)


def test_backtest_replays_a_rule_with_the_engine(client: TestClient) -> None:
    run_id = collapsed_run(client)
    r = backtest(client, run_id, condition="above", threshold=0.4, pending_points=4, probe="fc*")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["run_matches"] is True
    assert body["probes"] == ["fc1", "fc2", "fc3"]
    assert body["points_judged"] == 30
    assert [(e["probe"], e["step"], e["status"]) for e in body["events"]] == [
        ("fc2", 3, "firing"),
        ("fc3", 3, "firing"),
    ]
    assert body["events"][0]["message"] == "dead_fraction on fc2 is 0.5, above 0.4 for 4 points"
    fig = body["figure"]
    assert [t["name"] for t in fig["data"]] == ["fc1", "fc2", "fc3", "alerts"]
    assert fig["data"][3]["x"] == [3, 3]
    assert [s["y0"] for s in fig["layout"]["shapes"]] == [0.4]
    # nothing was saved
    assert "try" not in {x["name"] for x in client.get("/api/v1/projects/proj/rules").json()}


def test_backtest_honours_the_run_glob_and_checks_its_input(client: TestClient) -> None:
    run_id = collapsed_run(client)
    other = backtest(client, run_id, condition="above", threshold=0.1, run="other-*")
    assert other.json()["run_matches"] is False
    assert other.json()["events"] == []
    invalid = backtest(client, run_id, condition="above")
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"][:2] == ["body", "rule"]
    unknown = backtest(client, run_id, condition="above", threshold=1, indicator="nope")
    assert unknown.json()["detail"][0]["loc"] == ["body", "rule", "indicator"]
    elsewhere = ingest(client, make_batch(project="elsewhere"))
    wrong = backtest(client, elsewhere, condition="above", threshold=1)
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["body", "run_id"]
    assert backtest(client, run_id, "nope", condition="above", threshold=1).status_code == 404


def test_tokens_are_created_once_listed_without_secret_and_revoked(client: TestClient) -> None:
    created = client.post("/api/v1/projects/newproj/tokens", json={"name": "ci"})
    assert created.status_code == 201, created.text
    secret = created.json()["token"]
    listed = client.get("/api/v1/projects/newproj/tokens").json()
    assert [t["name"] for t in listed] == ["ci"]
    assert "token" not in listed[0]
    assert secret not in str(listed)
    token_id = created.json()["id"]
    revoked = client.delete(f"/api/v1/projects/newproj/tokens/{token_id}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    missing = client.delete("/api/v1/projects/newproj/tokens/999")
    assert missing.json()["detail"] == errors.TOKEN_NOT_FOUND.format(
        token_id=999, project="newproj"
    )
    assert client.get("/api/v1/projects/nope/tokens").status_code == 404
    assert client.post("/api/v1/projects/bad name/tokens", json={}).status_code == 422


def event(created: datetime) -> AlertEventPublic:
    return AlertEventPublic(
        id=uuid.uuid4(),
        project="p",
        run_id=uuid.uuid4(),
        run_name="r",
        status=EventStatus.firing,
        severity=Severity.critical,
        created_at=created,
        url="/",
    )


def test_alert_cursor_sends_each_event_once_and_looks_back_for_late_commits() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    cursor = _AlertCursor(t0)
    first, second = event(t0), event(t0 + timedelta(seconds=5))
    assert cursor.fresh([first, second]) == [first, second]
    assert cursor.fresh([first, second]) == [], "already sent"
    # an event of another process stamped a little earlier, committed later, still goes out
    late = event(t0 + timedelta(seconds=2))
    assert cursor.fresh([first, late, second]) == [late]
    assert cursor.since == t0 + timedelta(seconds=5) - ALERT_OVERLAP or cursor.since == t0
