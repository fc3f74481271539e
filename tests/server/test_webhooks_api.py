"""``/api/v1/projects/{project}/webhooks``: CRUD, validation with the field named, nothing
stored on error, auth (SQLite and Postgres)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collapsewatch_server import errors
from collapsewatch_server.app import create_app
from collapsewatch_server.config import Settings
from collapsewatch_server.webhooks import signing
from tests.helpers import JSON

BASE = "/api/v1/projects/vision/webhooks"
URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def local(sqlite_url: str) -> Iterator[TestClient]:
    """SQLite only, no worker: for validation, which never reaches the database."""
    with TestClient(create_app(Settings(db_url=sqlite_url, worker=False))) as client:
        yield client


def create(client: TestClient, **fields: Any) -> Any:
    return client.post(BASE, json={"url": URL, **fields})


def test_create_shows_the_secret_once_then_only_a_hint(client: TestClient) -> None:
    r = create(client, name="ops", format="slack", severities=["critical"])
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_")
    assert len(signing.secret_key(created["secret"])) == 32
    assert created["secret_hint"] == created["secret"][:10] + "..."
    assert (created["name"], created["format"], created["severities"], created["enabled"]) == (
        "ops",
        "slack",
        ["critical"],
        True,
    )
    listed = client.get(BASE).json()
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in client.get(f"{BASE}/{created['id']}").json()


def test_a_given_secret_is_kept(local: TestClient) -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    assert create(local, secret=secret).json()["secret"] == secret


def test_creating_a_webhook_creates_its_project_with_the_default_rules(
    client: TestClient,
) -> None:
    assert client.get(BASE).status_code == 404
    assert create(client).status_code == 201
    assert "vision" in [p["name"] for p in client.get("/api/v1/projects").json()]
    rules = client.get("/api/v1/projects/vision/rules").json()
    assert rules and all(r["is_default"] for r in rules)


def test_update_and_delete(client: TestClient) -> None:
    wid = create(client).json()["id"]
    r = client.put(f"{BASE}/{wid}", json={"format": "discord", "enabled": False, "name": "d"})
    assert r.status_code == 200, r.text
    assert (r.json()["format"], r.json()["enabled"], r.json()["url"]) == ("discord", False, URL)
    assert client.put(f"{BASE}/{wid}", json={"url": "http://localhost:8000/x"}).status_code == 200
    assert client.get(f"{BASE}/{wid}").json()["url"] == "http://localhost:8000/x"
    assert client.delete(f"{BASE}/{wid}").status_code == 204
    assert client.get(f"{BASE}/{wid}").status_code == 404
    assert client.delete(f"{BASE}/{wid}").status_code == 404


def test_unknown_webhook_or_project_is_404(client: TestClient) -> None:
    create(client)
    r = client.get(f"{BASE}/999")
    assert r.status_code == 404
    assert r.json()["detail"] == errors.WEBHOOK_NOT_FOUND.format(webhook_id=999, project="vision")
    assert client.get("/api/v1/projects/nope/webhooks/1/deliveries").status_code == 404
    assert client.post("/api/v1/projects/nope/webhooks/1/test", headers=JSON).status_code == 404


def _loc_and_msg(r: Any) -> list[tuple[list[Any], str]]:
    assert r.status_code == 422, r.text
    return [(d["loc"], d["msg"]) for d in r.json()["detail"]]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/",
         errors.WEBHOOK_URL_REFUSED.format(address="169.254.169.254", kind="link-local/metadata")),
        ("http://[fe80::1%25eth0]/hook", None),
        ("http://[fe80::1]/hook",
         errors.WEBHOOK_URL_REFUSED.format(address="fe80::1", kind="link-local")),
        ("http://10.1.2.3/hook", errors.WEBHOOK_URL_PRIVATE.format(address="10.1.2.3")),
        ("file:///etc/passwd", errors.WEBHOOK_URL_SCHEME.format(scheme="file")),
        ("ftp://127.0.0.1/hook", errors.WEBHOOK_URL_SCHEME.format(scheme="ftp")),
    ],
)  # fmt: skip
def test_refused_targets_are_422_on_url_and_store_nothing(
    local: TestClient, url: str, message: str | None
) -> None:
    ((loc, msg),) = _loc_and_msg(local.post(BASE, json={"url": url}))
    assert loc == ["body", "url"]
    if message is not None:
        assert msg == message
    assert local.get("/api/v1/projects").json() == []  # not even the project
    wid = create(local).json()["id"]
    ((loc, _),) = _loc_and_msg(local.put(f"{BASE}/{wid}", json={"url": url}))
    assert loc == ["body", "url"]
    assert local.get(f"{BASE}/{wid}").json()["url"] == URL


def test_private_targets_pass_when_allowed(sqlite_url: str) -> None:
    app = create_app(Settings(db_url=sqlite_url, webhook_allow_private=True, worker=False))
    with TestClient(app) as client:
        assert create(client, url="http://10.1.2.3/hook").status_code == 201
        ((loc, _),) = _loc_and_msg(create(client, url="http://169.254.169.254/"))
        assert loc == ["body", "url"]


@pytest.mark.parametrize(
    "secret",
    ["whsec_" + base64.b64encode(b"k" * 20).decode(), "x" * 40, "whsec_!!!!!!!!!!!!!!!!!!!!!!!!"],
)
def test_a_malformed_secret_is_422_on_secret(local: TestClient, secret: str) -> None:
    ((loc, msg),) = _loc_and_msg(create(local, secret=secret))
    assert (loc, msg) == (["body", "secret"], signing.SECRET_FORMAT)
    assert local.get("/api/v1/projects").json() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": URL, "format": "teams"}, "format"),
        ({"url": URL, "severities": []}, "severities"),
        ({"url": URL, "severities": ["fatal"]}, "severities"),
        ({"url": URL, "colour": "red"}, "colour"),
        ({}, "url"),
    ],
)
def test_schema_errors_name_the_field(local: TestClient, body: dict[str, Any], field: str) -> None:
    r = local.post(BASE, json=body)
    assert r.status_code == 422
    assert field in r.json()["detail"][0]["loc"]


def test_a_project_name_runs_could_not_use_is_refused(local: TestClient) -> None:
    r = local.post("/api/v1/projects/bad name!/webhooks", json={"url": URL})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "project"]


def test_webhooks_need_the_admin_token_when_one_is_set(sqlite_url: str) -> None:
    app = create_app(Settings(db_url=sqlite_url, admin_token="s3cret", worker=False))
    with TestClient(app) as client:
        assert create(client).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert client.post(BASE, json={"url": URL}, headers=auth).status_code == 201
        assert client.get(BASE).status_code == 401
        assert client.get(BASE, headers=auth).status_code == 200
