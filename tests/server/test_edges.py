"""The server's edges in the no-token mode: a foreign ``Host`` (DNS rebinding) and cross-site
"simple" requests (form or text/plain posts) are refused before any route, on both backends."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from collapsewatch_server import create_app, errors
from collapsewatch_server.api.edges import host_name
from collapsewatch_server.config import Settings
from collapsewatch_server.tables import Run
from tests.helpers import JSON, make_batch


def run_count(client: TestClient) -> int:
    with client.app.state.context.db.engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(select(func.count()).select_from(Run)).scalar_one())


@pytest.fixture
def open_server(db_url: str) -> Iterator[TestClient]:
    """A server as `collapsewatch serve` runs it by default: no token, no extra Host names."""
    app = create_app(Settings(db_url=db_url, allowed_hosts="", worker=False))
    with TestClient(app, base_url="http://127.0.0.1:8420") as client:
        yield client


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8420", "localhost:8420", "[::1]:8420", "LOCALHOST", "app.localhost:80"]
)
def test_loopback_names_are_served(open_server: TestClient, host: str) -> None:
    assert open_server.get("/api/v1/runs", headers={"host": host}).status_code == 200


@pytest.mark.parametrize(
    "host",
    ["attacker.example", "attacker.example:8420", "testserver", "127.0.0.1.attacker.example"],
)
def test_a_foreign_host_is_refused_before_any_route(open_server: TestClient, host: str) -> None:
    for method, path in [("GET", "/api/v1/runs"), ("GET", "/"), ("POST", "/api/v1/ingest")]:
        r = open_server.request(
            method, path, headers={"host": host, **JSON}, content=json.dumps(make_batch())
        )
        assert r.status_code == 400, (method, path, r.text)
        assert r.json()["detail"] == errors.HOST_UNTRUSTED.format(host=host)
    assert run_count(open_server) == 0


def test_allowed_hosts_and_public_url_extend_the_names(sqlite_url: str) -> None:
    settings = Settings(
        db_url=sqlite_url,
        allowed_hosts="cw.lab.internal, other.internal",
        public_url="https://watch.example.org/",
        worker=False,
    )
    with TestClient(create_app(settings)) as client:
        for host in ["cw.lab.internal:8420", "other.internal", "watch.example.org", "127.0.0.1"]:
            assert client.get("/healthz", headers={"host": host}).status_code == 200, host
        assert client.get("/healthz", headers={"host": "evil.internal"}).status_code == 400


def test_with_a_token_the_host_is_left_to_the_token(sqlite_url: str) -> None:
    settings = Settings(db_url=sqlite_url, admin_token="a-long-admin-token", allowed_hosts="")
    with TestClient(create_app(settings), base_url="http://cw.company.example") as client:
        assert client.get("/healthz").status_code == 200


def test_star_serves_any_host(sqlite_url: str) -> None:
    with TestClient(create_app(Settings(db_url=sqlite_url, allowed_hosts="*"))) as client:
        assert client.get("/healthz", headers={"host": "anything.example"}).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_cross_site_post_stores_nothing(
    open_server: TestClient, content_type: str | None
) -> None:
    """What a form on another site, or a ``no-cors`` fetch, can send without a preflight."""
    headers = {"content-type": content_type} if content_type else {}
    r = open_server.post("/api/v1/ingest", content=json.dumps(make_batch()), headers=headers)
    assert r.status_code == 415
    assert r.json()["detail"] == errors.CONTENT_TYPE_NOT_JSON.format(
        method="POST", got=content_type or "none"
    )
    assert run_count(open_server) == 0


def test_json_with_gzip_or_a_charset_is_accepted(open_server: TestClient) -> None:
    body = gzip.compress(json.dumps(make_batch()).encode())
    r = open_server.post(
        "/api/v1/ingest",
        content=body,
        headers={"content-type": "Application/JSON; charset=utf-8", "content-encoding": "gzip"},
    )
    assert r.status_code == 202, r.text
    assert run_count(open_server) == 1


def test_bodyless_state_changes_need_the_json_type_too(open_server: TestClient) -> None:
    """A ``no-cors`` POST without a body has no content type: enable/disable/test refuse it."""
    open_server.post("/api/v1/ingest", json=make_batch(project="p"))
    rule = open_server.get("/api/v1/projects/p/rules").json()[0]
    path = f"/api/v1/projects/p/rules/{rule['id']}/disable"
    assert open_server.post(path).status_code == 415
    assert open_server.get(f"/api/v1/projects/p/rules/{rule['id']}").json()["enabled"] is True
    assert open_server.post(path, headers=JSON).json()["enabled"] is False
    put = open_server.put(
        f"/api/v1/projects/p/rules/{rule['id']}",
        content=json.dumps({"enabled": True}),
        headers={"content-type": "text/plain"},
    )
    assert put.status_code == 415


def test_the_login_form_still_posts_form_data(sqlite_url: str) -> None:
    settings = Settings(db_url=sqlite_url, admin_token="a-long-admin-token", allowed_hosts="")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        r = client.post("/login", data={"token": "wrong", "next": "/"}, follow_redirects=False)
        assert r.status_code == 401


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("LocalHost:8420", "localhost"),
        ("[::1]:8420", "::1"),
        ("[::1]", "::1"),
        ("example.org", "example.org"),
        ("10.0.0.1:80", "10.0.0.1"),
    ],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/v1/projects/p/rules", {"GET", "POST"}),
        ("/api/v1/projects/p/rules/1", {"DELETE", "GET", "PUT"}),
        ("/api/v1/projects/p/webhooks/1", {"DELETE", "GET", "PUT"}),
        ("/api/v1/ingest", {"POST"}),
    ],
)
def test_a_405_lists_every_method_of_the_path(
    open_server: TestClient, path: str, methods: set[str]
) -> None:
    r = open_server.request("PATCH", path, headers=JSON, content=b"{}")
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == methods
