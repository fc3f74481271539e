"""Out-of-range input never reaches the database: integers past their columns, NUL and other
control characters, base64 that is not base64. Every refusal is a 422 naming the field, the
same on SQLite and Postgres, with nothing stored, and the next good batch is stored."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from collapsewatch.schemas.bounds import MAX_INT32, MAX_INT64, MAX_STEP
from collapsewatch_server.tables import Probe, Run, StatRecordRow
from tests.helpers import JSON, make_batch

Batch = dict[str, Any]
RULES = "/api/v1/projects/proj/rules"


def stored(client: TestClient) -> tuple[int, int, int]:
    engine = client.app.state.context.db.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (Run, Probe, StatRecordRow)
        )


def assert_refused(response: Any, loc: tuple[str | int, ...]) -> list[dict[str, Any]]:
    """A 422 whose problems include one at ``loc`` (or inside it, for a union's members)."""
    assert response.status_code == 422, response.text
    problems: list[dict[str, Any]] = response.json()["detail"]
    assert any(tuple(p["loc"][: len(loc)]) == loc for p in problems), (loc, problems)
    return problems


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[Batch], None]:
    def apply(batch: Batch) -> None:
        target: Any = batch
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return apply


SCALAR = {"probe": "lr", "kind": "scalar", "step": 0, "stats": {"value": 0.1}}

REFUSED_BATCHES: list[tuple[str, Callable[[Batch], None], tuple[str | int, ...]]] = [
    ("step past BIGINT", _set(("records", 0, "step"), 2**63), ("records", 0, "step")),
    ("step past 2^53", _set(("records", 0, "step"), MAX_STEP + 1), ("records", 0, "step")),
    ("NUL in a record's probe", _set(("records", 0, "probe"), "fc\x001"), ("records", 0, "probe")),
    ("ESC in a probe name", _set(("run", "probes", 0, "name"), "fc\x1b1"), ("run", "probes", 0)),
    (
        "order past INTEGER",
        _set(("run", "probes", 0, "order"), MAX_INT32 + 1),
        ("run", "probes", 0),
    ),
    ("width past INTEGER", _set(("run", "probes", 0, "width"), 2**31), ("run", "probes", 0)),
    ("params past BIGINT", _set(("run", "probes", 0, "params"), 2**63), ("run", "probes", 0)),
    ("NUL in a module", _set(("run", "probes", 0, "module"), "Lin\x00ear"), ("run", "probes", 0)),
    ("NUL in the host", _set(("run", "host"), "gpu\x00"), ("run", "host")),
    ("newline in a run name", _set(("run", "name"), "run\n"), ("run", "name")),
    ("DEL in a coverage key", _set(("run", "coverage"), {"dead\x7f": {"watched": True}}), ("run",)),
    ("packed f32 not base64", _set(("records", 0, "stats", "sum"), {"f32": "!!!"}), ("records",)),
    (
        "packed f32 with junk",
        _set(("records", 0, "stats", "sum"), {"f32": "AAAA*AAA"}),
        ("records",),
    ),
]


@pytest.mark.parametrize(
    ("case", "spoil", "loc"), REFUSED_BATCHES, ids=[c[0] for c in REFUSED_BATCHES]
)
def test_a_refused_batch_stores_nothing_and_the_next_is_stored(
    client: TestClient, case: str, spoil: Callable[[Batch], None], loc: tuple[str | int, ...]
) -> None:
    batch = make_batch()
    batch["records"].append(dict(SCALAR))
    spoil(batch)
    assert_refused(client.post("/api/v1/ingest", json=batch), loc)
    assert stored(client) == (0, 0, 0)
    good = make_batch(steps=range(2), probes=("fc1",))
    assert client.post("/api/v1/ingest", json=good).status_code == 202
    assert stored(client)[0] == 1


def test_a_scalar_name_with_nul_is_named(client: TestClient) -> None:
    """The poison batch of issue 15: a scalar whose name holds NUL (a 500 on Postgres)."""
    batch = make_batch()
    batch["records"].append({**SCALAR, "probe": "train/loss\x00"})
    problems = assert_refused(client.post("/api/v1/ingest", json=batch), ("records", 9, "probe"))
    assert "control characters (found U+0000 at position 10)" in problems[0]["msg"]


def test_the_largest_values_are_stored(client: TestClient) -> None:
    batch = make_batch(steps=range(0), probes=("fc1",))
    batch["run"]["probes"][0].update(order=MAX_INT32, width=4, params=MAX_INT64)
    batch["run"]["config"] = {"note": "tabs\tand\nnewlines are text"}
    batch["records"] = [{**SCALAR, "step": MAX_STEP}]
    r = client.post("/api/v1/ingest", json=batch)
    assert r.status_code == 202, r.text
    run = client.get(f"/api/v1/runs/{batch['run']['run_id']}").json()
    assert run["last_step"] == MAX_STEP


@pytest.mark.parametrize(
    ("method", "path", "loc"),
    [
        ("GET", f"{RULES}/{2**63}", ("path", "rule_id")),
        ("GET", f"{RULES}/{2**31}", ("path", "rule_id")),
        ("DELETE", f"/api/v1/projects/proj/tokens/{2**63 - 1}", ("path", "token_id")),
        ("DELETE", f"/api/v1/projects/proj/silences/{2**31}", ("path", "silence_id")),
        ("PUT", f"/api/v1/projects/proj/webhooks/{2**31}", ("path", "webhook_id")),
        ("GET", f"{RULES}/0", ("path", "rule_id")),
        ("PUT", f"{RULES}/{2**63}", ("path", "rule_id")),
        ("DELETE", f"{RULES}/{2**64}", ("path", "rule_id")),
        ("POST", f"{RULES}/{2**63}/enable", ("path", "rule_id")),
        ("GET", f"/api/v1/projects/proj/webhooks/{2**63}", ("path", "webhook_id")),
        ("POST", f"/api/v1/projects/proj/webhooks/{2**63}/test", ("path", "webhook_id")),
        ("GET", f"/api/v1/projects/proj/webhooks/{2**63}/deliveries", ("path", "webhook_id")),
        ("DELETE", f"/api/v1/projects/proj/tokens/{2**63}", ("path", "token_id")),
        ("GET", "/api/v1/projects/pr%00oj/rules", ("path", "project")),
        ("GET", "/api/v1/runs?project=pr%00oj", ("query", "project")),
        ("GET", "/api/v1/alerts?project=%1b", ("query", "project")),
        ("GET", "/?project=pr%00oj", ("query", "project")),
        ("GET", "/projects/pr%00oj/settings", ("path", "project")),
        ("GET", "/api/v1/overview?q=a%00", ("query", "q")),
    ],
)
def test_path_and_query_parameters_are_bounded(
    client: TestClient, method: str, path: str, loc: tuple[str, ...]
) -> None:
    client.post("/api/v1/ingest", json=make_batch(project="proj"))
    body = {"enabled": True} if method == "PUT" else None
    assert_refused(client.request(method, path, json=body, headers=JSON), loc)


def test_run_parameters_are_bounded(client: TestClient) -> None:
    batch = make_batch()
    client.post("/api/v1/ingest", json=batch)
    run = f"/api/v1/runs/{batch['run']['run_id']}"
    assert_refused(client.get(f"{run}/events", params={"after": 2**63}), ("query", "after"))
    assert_refused(
        client.get(f"{run}/spectrum", params={"probe": "fc1", "step": 2**63}), ("query", "step")
    )
    assert_refused(
        client.get(f"{run}/spectrum", params={"probe": "fc1", "step": 0, "against": 2**53}),
        ("query", "against"),
    )
    assert_refused(
        client.get(f"{run}/series/loss", params={"probe": "lo\x00ss"}), ("query", "probe")
    )
    assert_refused(
        client.get(f"{run}/series/lo%00ss", params={"probe": "loss"}), ("path", "indicator")
    )
    # a page shows a run, whatever step the link asks to mark
    page = client.get(f"/runs/{batch['run']['run_id']}", params={"step": str(2**70)})
    assert page.status_code == 200


def rule(**fields: Any) -> dict[str, Any]:
    return {"name": "r", "indicator": "loss", "condition": "above", "threshold": 1.0, **fields}


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"name": "dead\x00units"}, ("body", "name")),
        ({"description": "a\x00b"}, ("body", "description")),
        ({"indicator": "lo\x00ss"}, ("body", "indicator")),
        ({"probe": "fc\x0a*"}, ("body", "probe")),
        ({"pending_points": MAX_INT32 + 1}, ("body", "pending_points")),
        ({"pending_steps": 2**63}, ("body", "pending_steps")),
        ({"warmup_steps": MAX_STEP + 1}, ("body", "warmup_steps")),
    ],
)
def test_rule_fields_are_bounded(
    client: TestClient, fields: dict[str, Any], loc: tuple[str, ...]
) -> None:
    client.post("/api/v1/ingest", json=make_batch(project="proj"))
    before = client.get(RULES).json()
    assert_refused(client.post(RULES, json=rule(**fields)), loc)
    some = before[0]["id"]
    assert_refused(client.put(f"{RULES}/{some}", json=fields), loc)
    assert client.get(RULES).json() == before


def test_free_text_keeps_its_line_breaks(client: TestClient) -> None:
    client.post("/api/v1/ingest", json=make_batch(project="proj"))
    r = client.post(RULES, json=rule(description="first line\n\tsecond line"))
    assert r.status_code == 201, r.text
    assert r.json()["description"] == "first line\n\tsecond line"


def test_webhook_and_token_names_are_bounded(client: TestClient) -> None:
    client.post("/api/v1/ingest", json=make_batch(project="proj"))
    hooks = "/api/v1/projects/proj/webhooks"
    url = "http://127.0.0.1:9/hook"
    assert_refused(client.post(hooks, json={"name": "a\x00", "url": url}), ("body", "name"))
    assert_refused(client.post(hooks, json={"url": url + "\x00"}), ("body", "url"))
    tokens = "/api/v1/projects/proj/tokens"
    assert_refused(client.post(tokens, json={"name": "laptop\x07"}), ("body", "name"))
    assert client.get(hooks).json() == [] and client.get(tokens).json() == []


def test_unknown_run_ids_of_any_size_are_not_found(client: TestClient) -> None:
    assert client.get(f"/api/v1/runs/{uuid.uuid4()}").status_code == 404
