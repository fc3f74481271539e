"""POST /api/v1/ingest against the real app on a SQLite file and on Postgres."""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from collapsewatch.schemas import ProbeKind
from collapsewatch_server import errors
from collapsewatch_server.codec import as_arrays
from collapsewatch_server.indicators import compute_indicators
from collapsewatch_server.tables import IngestedBatch, Point, Run, StatRecordRow
from tests.helpers import JSON, activation_stats, make_batch


def post(client: Any, body: bytes | dict[str, Any], *, gz: bool = True, **headers: str) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if gz:
        raw = gzip.compress(raw)
        headers.setdefault("content-encoding", "gzip")
    return client.post(
        "/api/v1/ingest", content=raw, headers={"content-type": "application/json", **headers}
    )


def counts(app: Any) -> dict[str, int]:
    """Rows per table: what 'nothing written' is checked against."""
    engine = app.state.context.db.engine
    with engine.connect() as conn:
        return {
            m.__tablename__: conn.scalar(select(func.count()).select_from(m))
            for m in (Run, IngestedBatch, StatRecordRow, Point)
        }


def test_ingest_stores_records_and_points(client: Any, app: Any) -> None:
    batch = make_batch(steps=range(5))
    r = post(client, batch)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["duplicate"] is False
    assert body["records"] == 15  # 5 steps x (2 layers + loss)
    # every activation indicator the helper's statistics allow, and 2 loss indicators
    per_layer = len(compute_indicators(ProbeKind.activation, as_arrays(activation_stats())))
    assert body["points"] == 5 * (2 * per_layer + 2)
    run = client.get(f"/api/v1/runs/{batch['run']['run_id']}").json()
    assert run["last_step"] == 4
    assert [p["name"] for p in run["probes"]] == ["fc1", "fc2", "loss"]


def test_same_batch_twice_is_stored_once(client: Any, app: Any) -> None:
    batch = make_batch(steps=range(3))
    first = post(client, batch)
    before = counts(app)
    second = post(client, batch)
    assert first.status_code == second.status_code == 202
    assert second.json() == {**first.json(), "duplicate": True, "records": 0, "points": 0}
    assert counts(app) == before


def test_uncompressed_body_is_accepted(client: Any) -> None:
    r = post(client, make_batch(), gz=False)
    assert r.status_code == 202, r.text


def test_status_finished_marks_the_run(client: Any) -> None:
    batch = make_batch(status="finished")
    assert post(client, batch).status_code == 202
    run = client.get(f"/api/v1/runs/{batch['run']['run_id']}").json()
    assert run["status"] == "finished"
    assert run["finished_at"] is not None


def test_nan_values_are_stored_as_gaps(client: Any) -> None:
    batch = make_batch(steps=range(1), probes=("fc1",))
    batch["records"][-1]["stats"]["mean"] = float("nan")  # the loss record
    r = client.post(
        "/api/v1/ingest",
        content=json.dumps(batch).encode(),  # json writes NaN, as the SDK does
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 202, r.text
    points = client.get(
        f"/api/v1/runs/{batch['run']['run_id']}/series/loss", params={"probe": "loss"}
    ).json()
    assert points["values"] == [None]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["records"][0].__setitem__("step", "soon"), "step"),
        (lambda b: b["records"][0].__setitem__("step", -1), "step"),
        (lambda b: b["run"].__setitem__("project", "no spaces allowed"), "project"),
        (lambda b: b["run"].__setitem__("run_id", "not-a-uuid"), "run_id"),
        (lambda b: b.__setitem__("batch_id", 7), "batch_id"),
        (lambda b: b["records"][0].__setitem__("kind", "telepathy"), "kind"),
        (lambda b: b["records"][0]["stats"].__setitem__("sum", ["x"]), "sum"),
        (lambda b: b.__setitem__("surprise", 1), "surprise"),
    ],
)
def test_wrong_types_are_422_naming_the_field(
    client: Any, app: Any, mutate: Any, field: str
) -> None:
    batch = make_batch()
    mutate(batch)
    before = counts(app)
    r = post(client, batch)
    assert r.status_code == 422, r.text
    locs = [d["loc"] for d in r.json()["detail"]]
    assert any(field in [str(x) for x in loc] for loc in locs), locs
    assert counts(app) == before


def test_malformed_json_is_400(client: Any, app: Any) -> None:
    before = counts(app)
    r = post(client, b'{"batch_id": ')
    assert r.status_code == 400
    assert r.json()["detail"][0]["type"] == "json_invalid"
    assert counts(app) == before


def test_declared_gzip_that_is_not_gzip_is_400(client: Any) -> None:
    r = client.post("/api/v1/ingest", content=b"{}", headers={**JSON, "content-encoding": "gzip"})
    assert r.status_code == 400
    assert r.json()["detail"] == errors.BODY_NOT_GZIP


@pytest.mark.parametrize("trailing", [b"", b"\x00" * 7], ids=["one member", "bytes after it"])
def test_a_gzipped_batch_is_processed_from_what_was_sent(client: Any, trailing: bytes) -> None:
    """The queue keeps a gzipped body as sent (one gzip member) and compresses anything else
    again: both are processed."""
    batch = make_batch(steps=range(3), probes=("fc1",))
    body = gzip.compress(json.dumps(batch).encode()) + trailing
    r = client.post("/api/v1/ingest", content=body, headers={**JSON, "content-encoding": "gzip"})
    assert r.status_code == 202, r.text
    listed = client.get(f"/api/v1/runs/{batch['run']['run_id']}/series").json()
    assert listed and all(s["points"] == 3 for s in listed)


def test_unknown_encoding_is_400(client: Any) -> None:
    r = client.post("/api/v1/ingest", content=b"{}", headers={**JSON, "content-encoding": "br"})
    assert r.status_code == 400
    assert r.json()["detail"] == errors.BODY_BAD_ENCODING.format(encoding="br")


def test_run_of_another_project_is_409(client: Any, app: Any) -> None:
    run_id = uuid.uuid4()
    assert post(client, make_batch(run_id, project="alpha")).status_code == 202
    before = counts(app)
    r = post(client, make_batch(run_id, project="beta"))
    assert r.status_code == 409
    assert "alpha" in r.json()["detail"]
    assert counts(app) == before


@pytest.fixture
def small_limit_client(db_url: str) -> Any:
    from fastapi.testclient import TestClient

    from collapsewatch_server import create_app
    from collapsewatch_server.config import Settings

    app = create_app(Settings(db_url=db_url, max_body_bytes=4096))
    with TestClient(app) as c:
        yield c


def test_oversized_body_is_413(small_limit_client: Any) -> None:
    big = make_batch(steps=range(200))
    r = post(small_limit_client, big, gz=False)
    assert r.status_code == 413
    assert r.json()["detail"] == errors.BODY_TOO_LARGE.format(limit=4096)


def test_gzip_bomb_is_413(small_limit_client: Any) -> None:
    # 1 MB of spaces compresses to about 1 KB: under the limit on the wire, far over inflated
    r = post(small_limit_client, b" " * 1_000_000)
    assert r.status_code == 413


def _packed(values: list[float]) -> dict[str, str]:
    import base64
    import struct

    return {"f32": base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()}


def test_packed_vectors_give_the_same_points_as_lists(client: Any) -> None:
    plain = make_batch(steps=range(1), probes=("fc1",))
    packed = make_batch(steps=range(1), probes=("fc1",))
    for key in ("sum", "sumsq", "pos", "unit_sum", "eig"):
        packed["records"][0]["stats"][key] = _packed(plain["records"][0]["stats"][key])
    for batch in (plain, packed):
        assert post(client, batch).status_code == 202
    series = [
        client.get(f"/api/v1/runs/{b['run']['run_id']}/series").json() for b in (plain, packed)
    ]
    values = [{(s["indicator"], s["probe"]): s["last_value"] for s in ser} for ser in series]
    assert values[0] == values[1]


@pytest.mark.parametrize("bad", [{"f32": "AAA="}, {"f32": "not base64!"}, {"f64": "AAAAAA=="}])
def test_broken_packed_vectors_are_422(client: Any, app: Any, bad: dict[str, str]) -> None:
    batch = make_batch()
    batch["records"][0]["stats"]["sum"] = bad
    before = counts(app)
    r = post(client, batch)
    assert r.status_code == 422, r.text
    assert any("sum" in [str(x) for x in d["loc"]] for d in r.json()["detail"])
    assert counts(app) == before
