"""Auth hardening: failed tokens throttled per address, a signed session cookie instead of the
token, the API description behind auth, strong tokens for public binds, a private SQLite file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from collapsewatch_server import auth, create_app, errors
from collapsewatch_server.api.deps import SESSION_COOKIE
from collapsewatch_server.config import Settings
from collapsewatch_server.services import ingest_tokens
from tests.helpers import make_batch, scrape

ADMIN = "admin-secret-for-tests"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def locked(db_url: str) -> Iterator[TestClient]:
    settings = Settings(db_url=db_url, admin_token=ADMIN, auth_free_failures=3, auth_max_block_s=1)
    with TestClient(create_app(settings)) as client:
        yield client


def test_wrong_tokens_are_throttled_per_address(locked: TestClient) -> None:
    project_token = ingest_tokens.create_token(locked.app.state.context, "vision").token  # type: ignore[attr-defined]
    for _ in range(3):  # the free failures
        assert locked.get("/api/v1/runs", headers=bearer("guess")).status_code == 401
    assert locked.get("/api/v1/runs", headers=bearer("guess")).status_code == 401  # blocks 1 s
    for path in ("/api/v1/runs", "/api/v1/projects"):
        r = locked.get(path, headers=bearer(ADMIN))  # even the right token: guessing gains nothing
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "1"
        assert r.json()["detail"] == errors.AUTH_THROTTLED.format(
            address="testclient", retry_after=1
        )
    login = locked.post("/login", data={"token": ADMIN, "next": "/"}, follow_redirects=False)
    assert login.status_code == 429 and SESSION_COOKIE not in locked.cookies
    ingest = {"content-type": "application/json"}
    admin_ingest = locked.post(
        "/api/v1/ingest", json=make_batch(project="vision"), headers={**ingest, **bearer(ADMIN)}
    )
    assert admin_ingest.status_code == 429
    # a trainer behind the same address keeps ingesting with its project token
    ok = locked.post(
        "/api/v1/ingest", json=make_batch(project="vision"), headers=bearer(project_token)
    )
    assert ok.status_code == 202, ok.text
    # no credentials is no guess: still 401
    assert locked.get("/api/v1/runs").status_code == 401
    time.sleep(1.1)
    assert locked.get("/api/v1/runs", headers=bearer(ADMIN)).status_code == 200
    # a success starts the address afresh: three free failures again
    for _ in range(3):
        assert locked.get("/api/v1/runs", headers=bearer("guess")).status_code == 401
    assert locked.get("/api/v1/runs", headers=bearer(ADMIN)).status_code == 200


def test_wrong_ingest_tokens_count_too(locked: TestClient) -> None:
    for _ in range(4):
        r = locked.post("/api/v1/ingest", json=make_batch(), headers=bearer("cw_forged"))
        assert r.status_code == 401
    assert (
        locked.post("/api/v1/ingest", json=make_batch(), headers=bearer(ADMIN)).status_code == 429
    )
    time.sleep(1.1)  # the address's block ends; /metrics needs the admin token too
    rejected = scrape(locked, headers=bearer(ADMIN))
    assert rejected[("collapsewatch_ingest_rejected_total", (("reason", "throttled"),))] == 1
    assert ("collapsewatch_ingest_rejected_total", (("reason", "busy"),)) not in rejected


def test_the_session_cookie_is_signed_not_the_token(locked: TestClient) -> None:
    r = locked.post("/login", data={"token": ADMIN, "next": "/"}, follow_redirects=False)
    assert r.status_code == 303
    cookie = locked.cookies[SESSION_COOKIE]
    assert ADMIN not in cookie and ADMIN not in r.headers["set-cookie"]
    assert locked.get("/api/v1/runs").status_code == 200
    version, expires, signature = cookie.split(".")
    forged = f"{version}.{int(expires) + 10**6}.{signature}"
    locked.cookies.clear()
    locked.cookies.set(SESSION_COOKIE, cookie)
    assert locked.get("/api/v1/runs").status_code == 200
    for value in (forged, ADMIN, f"{version}.{expires}.{'0' * 64}", ""):
        locked.cookies.clear()
        locked.cookies.set(SESSION_COOKIE, value)
        assert locked.get("/api/v1/runs").status_code == 401, value
    # the raw token in the old cookie opens nothing
    locked.cookies.clear()
    locked.cookies.set("collapsewatch_token", ADMIN)
    assert locked.get("/api/v1/runs").status_code == 401


def test_a_session_ends_with_its_age_or_with_the_admin_token(tmp_path: Path) -> None:
    settings = Settings(db_url=f"sqlite:///{tmp_path}/a.db", admin_token=ADMIN)
    other = Settings(db_url=f"sqlite:///{tmp_path}/a.db", admin_token=ADMIN + "-rotated")
    now = 1_800_000_000.0
    cookie = auth.new_session(settings, now=now)
    assert auth.valid_session(settings, cookie, now=now + auth.SESSION_MAX_AGE_S - 1)
    assert not auth.valid_session(settings, cookie, now=now + auth.SESSION_MAX_AGE_S + 1)
    assert not auth.valid_session(other, cookie, now=now)


def test_the_api_description_is_behind_auth(locked: TestClient) -> None:
    assert locked.get("/openapi.json").status_code == 401
    assert locked.get("/docs", follow_redirects=False).status_code == 303
    assert locked.get("/redoc", follow_redirects=False).status_code == 303
    described = locked.get("/openapi.json", headers=bearer(ADMIN))
    assert described.status_code == 200 and "/api/v1/ingest" in described.json()["paths"]
    locked.post("/login", data={"token": ADMIN, "next": "/"})
    assert "swagger-ui" in locked.get("/docs").text


def test_without_a_token_the_description_is_open(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def _serve(host: str, token: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "COLLAPSEWATCH_ADMIN_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "collapsewatch_server.cli", "serve", "--host", host, "--db", db],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize("token", ["x", "change-me", "a" * (auth.MIN_PUBLIC_TOKEN_CHARS - 1)])
def test_a_public_bind_refuses_a_weak_token(sqlite_url: str, token: str) -> None:
    out = _serve("0.0.0.0", token, sqlite_url)
    assert out.returncode != 0
    expected = errors.REFUSE_WEAK_TOKEN.format(host="0.0.0.0", chars=auth.MIN_PUBLIC_TOKEN_CHARS)
    assert expected in out.stderr


def test_the_sqlite_file_is_created_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask would give 0644
    try:
        app = create_app(Settings(db_url=f"sqlite:///{tmp_path}/new/cw.db"))
        with TestClient(app) as client:
            client.post("/api/v1/ingest", json=make_batch())
            files = sorted(tmp_path.joinpath("new").iterdir())
            assert [f.name for f in files][:1] == ["cw.db"] and len(files) >= 2  # with -wal
            for f in files:
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        os.umask(old)
